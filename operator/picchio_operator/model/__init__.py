"""Pure model of the operator: custom resources in, Kubernetes objects and
status out.  Nothing in this package performs I/O or reads the clock — callers
pass ``now`` — so every builder is a deterministic function with golden tests."""
