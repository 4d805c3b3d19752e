"""``picchio`` commands: thin wrappers over the client, the bench and the dev harness."""
