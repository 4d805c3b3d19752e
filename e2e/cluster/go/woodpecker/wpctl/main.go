// wpctl: a small command line over the real Woodpecker client (v0.1.35), for
// picchio's interop tests and side-by-side benchmarks.  Not part of Woodpecker.
//
//	wpctl write --config woodpecker.yaml --log NAME --count N [--size B] [--tag T] [--inflight K]
//	            [--interval-ms MS] [--create] [--stop-on-error] [--hold-ms MS] [--no-close]
//	wpctl read  --config woodpecker.yaml --log NAME [--from SEG:ENTRY|earliest|latest] --count N
//	wpctl tail  (read that waits --timeout for --count entries to arrive)
//	wpctl bench --config woodpecker.yaml --log NAME --size B --inflight K --seconds S
//
// Embedded mode (woodpecker.storage.type local|minio) uses NewEmbedClientFromConfig; service mode
// (type service) uses NewClient with quorumBufferPools seeds.  Config comes from --config (a
// woodpecker.yaml, Woodpecker's own loader) and the flags below override single values.
//
// Output: one JSON object per line on stdout.  Every entry written or read is one line with its
// segment/entry id, payload length and sha256; the last line is {"op":"done",...}.  Woodpecker's
// own logs go to the file named by --log-file (default: discarded).  Every run is bounded by
// --timeout: a run that has not finished by then exits 3 after printing {"op":"timeout"}.
//
// Payloads written are deterministic (see payload()): the reader on the other side regenerates
// them from (tag, i, size) and compares byte for byte.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/zilliztech/woodpecker/common/config"
	"github.com/zilliztech/woodpecker/common/etcd"
	"github.com/zilliztech/woodpecker/proto"
	"github.com/zilliztech/woodpecker/woodpecker"
	wplog "github.com/zilliztech/woodpecker/woodpecker/log"
)

var (
	outMu sync.Mutex
	enc   *json.Encoder
)

// claimStdout keeps stdout for our JSON lines and points fd 1 (where Woodpecker's zap logger and
// log.Printf write) at logPath, or at /dev/null.
func claimStdout(logPath string) {
	fd, err := syscall.Dup(1)
	if err != nil {
		fmt.Fprintf(os.Stderr, "dup stdout: %v\n", err)
		os.Exit(2)
	}
	enc = json.NewEncoder(os.NewFile(uintptr(fd), "json-out"))
	if logPath == "" {
		logPath = os.DevNull
	}
	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		fmt.Fprintf(os.Stderr, "open %s: %v\n", logPath, err)
		os.Exit(2)
	}
	if err := syscall.Dup3(int(f.Fd()), 1, 0); err != nil {
		fmt.Fprintf(os.Stderr, "redirect stdout: %v\n", err)
		os.Exit(2)
	}
}

func emit(v map[string]any) {
	outMu.Lock()
	defer outMu.Unlock()
	if enc == nil { // before claimStdout (a flag or config error)
		enc = json.NewEncoder(os.Stdout)
	}
	_ = enc.Encode(v)
}

func fail(code int, format string, args ...any) {
	emit(map[string]any{"op": "error", "error": fmt.Sprintf(format, args...)})
	os.Exit(code)
}

// payload(tag, i, size): sha256("tag/i") repeated and cut to size bytes.  picchio's tests compute
// the same function (tests/interop/wp.py), so both sides can check content without shipping it.
func payload(tag string, i, size int) []byte {
	seed := sha256.Sum256([]byte(fmt.Sprintf("%s/%d", tag, i)))
	out := make([]byte, size)
	for off := 0; off < size; off += len(seed) {
		copy(out[off:], seed[:])
	}
	return out
}

func digest(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

type common struct {
	configPath, logName, logFile string
	auditorSeconds               int
	timeout                      time.Duration
	overrides                    []override
}

// override: a flag that, when given, sets one value of the loaded configuration.
type override struct {
	val *string
	set func(cfg *config.Configuration, v string)
}

func (c *common) str(fs *flag.FlagSet, name, usage string, set func(*config.Configuration, string)) {
	c.overrides = append(c.overrides, override{fs.String(name, "", usage), set})
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.configPath, "config", "", "woodpecker.yaml (Woodpecker's own loader; defaults when empty)")
	fs.StringVar(&c.logName, "log", "", "log name")
	fs.StringVar(&c.logFile, "log-file", "", "append Woodpecker's own log output to this file (default: discarded)")
	c.str(fs, "storage", "override woodpecker.storage.type: local|minio|service",
		func(cfg *config.Configuration, v string) { cfg.Woodpecker.Storage.Type = v })
	c.str(fs, "storage-root", "override woodpecker.storage.rootPath",
		func(cfg *config.Configuration, v string) { cfg.Woodpecker.Storage.RootPath = v })
	c.str(fs, "etcd", "override etcd.endpoints (comma-separated host:port)",
		func(cfg *config.Configuration, v string) { cfg.Etcd.Endpoints = strings.Split(v, ",") })
	c.str(fs, "etcd-root", "override etcd.rootPath", func(cfg *config.Configuration, v string) { cfg.Etcd.RootPath = v })
	c.str(fs, "minio", "override minio.address:port", func(cfg *config.Configuration, v string) {
		host, port, ok := strings.Cut(v, ":")
		p, err := strconv.Atoi(port)
		if !ok || err != nil {
			fail(2, "--minio wants host:port, got %q", v)
		}
		cfg.Minio.Address, cfg.Minio.Port = host, p
	})
	c.str(fs, "bucket", "override minio.bucketName", func(cfg *config.Configuration, v string) { cfg.Minio.BucketName = v })
	c.str(fs, "minio-root", "override minio.rootPath", func(cfg *config.Configuration, v string) { cfg.Minio.RootPath = v })
	c.str(fs, "access-key", "override minio.accessKeyID", func(cfg *config.Configuration, v string) { cfg.Minio.AccessKeyID = v })
	c.str(fs, "secret-key", "override minio.secretAccessKey",
		func(cfg *config.Configuration, v string) { cfg.Minio.SecretAccessKey = v })
	c.str(fs, "seeds", "service mode: override the first quorum buffer pool's seeds (comma-separated host:port)",
		func(cfg *config.Configuration, v string) {
			cfg.Woodpecker.Client.Quorum.SetBufferPoolSeeds(0, strings.Split(v, ","))
		})
	fs.IntVar(&c.auditorSeconds, "auditor-seconds", 0, "override woodpecker.client.auditor.maxInterval (s): how soon completed segments are compacted")
	fs.DurationVar(&c.timeout, "timeout", 60*time.Second, "deadline for the whole run")
}

func (c *common) load() *config.Configuration {
	var cfg *config.Configuration
	var err error
	if c.configPath != "" {
		cfg, err = config.NewConfiguration(c.configPath)
	} else {
		cfg, err = config.NewConfiguration()
	}
	if err != nil {
		fail(2, "config: %v", err)
	}
	for _, o := range c.overrides {
		if *o.val != "" {
			o.set(cfg, *o.val)
		}
	}
	if c.auditorSeconds > 0 {
		cfg.Woodpecker.Client.Auditor.MaxInterval = config.NewDurationSecondsFromInt(c.auditorSeconds)
	}
	claimStdout(c.logFile) // Woodpecker logs to fd 1; our JSON lines keep the real stdout
	if c.logFile == "" {
		cfg.Log.Level = "error"
	}
	if c.logName == "" {
		fail(2, "--log is required")
	}
	return cfg
}

func (c *common) client(ctx context.Context, cfg *config.Configuration) woodpecker.Client {
	var cli woodpecker.Client
	var err error
	if cfg.Woodpecker.Storage.IsStorageService() {
		etcdCli, eerr := etcd.GetRemoteEtcdClient(cfg.Etcd.GetEndpoints())
		if eerr != nil {
			fail(1, "etcd: %v", eerr)
		}
		cli, err = woodpecker.NewClient(ctx, cfg, etcdCli, true)
	} else {
		cli, err = woodpecker.NewEmbedClientFromConfig(ctx, cfg)
	}
	if err != nil {
		fail(1, "client: %v", err)
	}
	return cli
}

// deadline runs the whole command under --timeout; a run that overstays prints {"op":"timeout"}
// and exits 3, so a test never waits on a hung Woodpecker call.
func deadline(d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	go func() {
		<-ctx.Done()
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			time.Sleep(2 * time.Second) // let a ctx-aware call report first
			emit(map[string]any{"op": "timeout", "after_s": d.Seconds()})
			os.Exit(3)
		}
	}()
	return ctx, cancel
}

// open: the configuration, the run's deadline, a client and the log (created if asked).
func (c *common) open(create bool) (context.Context, context.CancelFunc, *config.Configuration, woodpecker.Client, wplog.LogHandle) {
	cfg := c.load()
	ctx, cancel := deadline(c.timeout)
	cli := c.client(ctx, cfg)
	return ctx, cancel, cfg, cli, openLog(ctx, cli, c.logName, create)
}

func parseFrom(s string) *wplog.LogMessageId {
	switch s {
	case "", "earliest":
		id := wplog.EarliestLogMessageID()
		return &id
	case "latest":
		id := wplog.LatestLogMessageID()
		return &id
	}
	seg, entry, ok := strings.Cut(s, ":")
	a, err1 := strconv.ParseInt(seg, 10, 64)
	b, err2 := strconv.ParseInt(entry, 10, 64)
	if !ok || err1 != nil || err2 != nil {
		fail(2, "--from wants SEG:ENTRY, earliest or latest, got %q", s)
	}
	return &wplog.LogMessageId{SegmentId: a, EntryId: b}
}

func openLog(ctx context.Context, cli woodpecker.Client, name string, create bool) wplog.LogHandle {
	if create {
		exists, err := cli.LogExists(ctx, name)
		if err != nil {
			fail(1, "log exists: %v", err)
		}
		if !exists {
			if err := cli.CreateLog(ctx, name); err != nil {
				fail(1, "create log: %v", err)
			}
		}
	}
	h, err := cli.OpenLog(ctx, name)
	if err != nil {
		fail(1, "open log: %v", err)
	}
	return h
}

func cmdWrite(args []string) {
	fs := flag.NewFlagSet("write", flag.ExitOnError)
	var c common
	c.register(fs)
	count := fs.Int("count", 10, "entries to write")
	sizeList := fs.String("size", "64", "payload bytes; a comma-separated list cycles per entry (entry i: sizes[i % len])")
	tag := fs.String("tag", "wp", "payload tag (payload i = sha256(tag/i) repeated)")
	start := fs.Int("start", 0, "index of the first payload")
	inflight := fs.Int("inflight", 1, "appends in flight")
	interval := fs.Int("interval-ms", 0, "pause between appends (a slow writer for live tails)")
	create := fs.Bool("create", false, "create the log if it does not exist")
	stopOnError := fs.Bool("stop-on-error", false, "stop at the first failed append (e.g. fenced)")
	hold := fs.Int("hold-ms", 0, "keep the writer open this long after the last append")
	noClose := fs.Bool("no-close", false, "exit without closing the writer (its segment stays Active)")
	waitSealed := fs.Bool("wait-sealed", false, "before closing, wait (within --timeout) until the writer's auditor "+
		"has compacted every Completed segment (object storage; see --auditor-seconds)")
	_ = fs.Parse(args)
	var sizes []int
	for _, f := range strings.Split(*sizeList, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 {
			fail(2, "--size wants byte counts, got %q", *sizeList)
		}
		sizes = append(sizes, n)
	}
	ctx, cancel, _, cli, h := c.open(*create)
	defer cancel()
	w, err := h.OpenLogWriter(ctx)
	if err != nil {
		fail(1, "open writer: %v", err)
	}
	emit(map[string]any{"op": "writer-open", "log": c.logName, "log_id": h.GetId()})
	sem := make(chan struct{}, max(1, *inflight))
	var wg sync.WaitGroup
	var mu sync.Mutex
	acked, failed := 0, 0
	stop := false
	for i := *start; i < *start+*count; i++ {
		mu.Lock()
		s := stop
		mu.Unlock()
		if s {
			break
		}
		sem <- struct{}{}
		p := payload(*tag, i, sizes[i%len(sizes)])
		ch := w.WriteAsync(ctx, &wplog.WriteMessage{Payload: p, Properties: map[string]string{"i": strconv.Itoa(i), "tag": *tag}})
		wg.Add(1)
		go func(i int, p []byte, ch <-chan *wplog.WriteResult) {
			defer wg.Done()
			defer func() { <-sem }()
			r := <-ch
			mu.Lock()
			defer mu.Unlock()
			if r.Err != nil {
				failed++
				if *stopOnError {
					stop = true
				}
				emit(map[string]any{"op": "nack", "i": i, "error": r.Err.Error()})
				return
			}
			acked++
			emit(map[string]any{"op": "ack", "i": i, "seg": r.LogMessageId.SegmentId, "entry": r.LogMessageId.EntryId,
				"len": len(p), "sha256": digest(p)})
		}(i, p, ch)
		if *interval > 0 {
			time.Sleep(time.Duration(*interval) * time.Millisecond)
		}
	}
	wg.Wait()
	if *waitSealed {
		for {
			segs, err := h.GetSegments(ctx)
			if err != nil {
				fail(1, "segments: %v", err)
			}
			left := 0
			for _, m := range segs {
				if m.Metadata.State == proto.SegmentState_Completed {
					left++
				}
			}
			if left == 0 {
				emit(map[string]any{"op": "sealed", "segments": len(segs)})
				break
			}
			select {
			case <-ctx.Done():
				fail(3, "still %d Completed segments at the deadline", left)
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	if *hold > 0 {
		time.Sleep(time.Duration(*hold) * time.Millisecond)
	}
	if !*noClose {
		if err := w.Close(ctx); err != nil {
			emit(map[string]any{"op": "close-error", "error": err.Error()})
		}
		_ = cli.Close(ctx)
	}
	emit(map[string]any{"op": "done", "acked": acked, "failed": failed})
	if *noClose {
		os.Exit(0) // leave the writer's segment Active, as a crashed writer would
	}
}

func cmdRead(args []string, tail bool) {
	fs := flag.NewFlagSet("read", flag.ExitOnError)
	var c common
	c.register(fs)
	from := fs.String("from", "earliest", "SEG:ENTRY, earliest or latest")
	count := fs.Int("count", -1, "entries to read (-1: until --idle-ms passes with nothing new)")
	idle := fs.Int("idle-ms", 3000, "read: stop after this long with no new entry (when --count is -1)")
	withPayload := fs.Bool("payload", false, "also print the payload as hex")
	_ = fs.Parse(args)
	ctx, cancel, _, cli, h := c.open(false)
	defer cancel()
	r, err := h.OpenLogReader(ctx, parseFrom(*from), "wpctl")
	if err != nil {
		fail(1, "open reader: %v", err)
	}
	emit(map[string]any{"op": "reader-open", "log": c.logName, "log_id": h.GetId()})
	n := 0
	for *count < 0 || n < *count {
		rctx := ctx
		var rcancel context.CancelFunc = func() {}
		if *count < 0 && !tail {
			rctx, rcancel = context.WithTimeout(ctx, time.Duration(*idle)*time.Millisecond)
		}
		m, err := r.ReadNext(rctx)
		rcancel()
		if err != nil {
			if *count < 0 && errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
				break
			}
			emit(map[string]any{"op": "read-error", "error": err.Error(), "read": n})
			os.Exit(1)
		}
		line := map[string]any{"op": "entry", "seg": m.Id.SegmentId, "entry": m.Id.EntryId,
			"len": len(m.Payload), "sha256": digest(m.Payload), "props": m.Properties}
		if *withPayload {
			line["payload"] = hex.EncodeToString(m.Payload)
		}
		emit(line)
		n++
	}
	_ = r.Close(ctx)
	_ = cli.Close(ctx)
	emit(map[string]any{"op": "done", "read": n})
}

func pct(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(p/100*float64(len(xs)))) - 1
	return xs[max(0, min(i, len(xs)-1))]
}

func cmdBench(args []string) {
	fs := flag.NewFlagSet("bench", flag.ExitOnError)
	var c common
	c.register(fs)
	size := fs.Int("size", 4096, "payload bytes")
	inflight := fs.Int("inflight", 1, "appends in flight")
	seconds := fs.Float64("seconds", 5, "measure this long")
	warmup := fs.Int("warmup", 5, "appends before measuring")
	_ = fs.Parse(args)
	ctx, cancel, cfg, cli, h := c.open(true)
	defer cancel()
	w, err := h.OpenLogWriter(ctx)
	if err != nil {
		fail(1, "open writer: %v", err)
	}
	p := payload("bench", 0, *size)
	for i := 0; i < *warmup; i++ {
		if r := w.Write(ctx, &wplog.WriteMessage{Payload: p}); r.Err != nil {
			fail(1, "warm-up append: %v", r.Err)
		}
	}
	var mu sync.Mutex
	var lats []float64
	errs := 0
	sem := make(chan struct{}, max(1, *inflight))
	var wg sync.WaitGroup
	t0 := time.Now()
	end := t0.Add(time.Duration(*seconds * float64(time.Second)))
	for time.Now().Before(end) && ctx.Err() == nil {
		sem <- struct{}{}
		s := time.Now()
		ch := w.WriteAsync(ctx, &wplog.WriteMessage{Payload: p})
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := <-ch
			d := time.Since(s).Seconds() * 1000
			mu.Lock()
			if r.Err != nil {
				errs++
			} else {
				lats = append(lats, d)
			}
			mu.Unlock()
			<-sem
		}()
	}
	wg.Wait()
	elapsed := time.Since(t0).Seconds()
	_ = w.Close(ctx)
	_ = cli.Close(ctx)
	sort.Float64s(lats)
	emit(map[string]any{"op": "bench", "impl": "woodpecker", "storage": cfg.Woodpecker.Storage.Type,
		"entry_size": *size, "concurrency": *inflight, "seconds": elapsed, "appends": len(lats), "errors": errs,
		"appends_per_s": float64(len(lats)) / elapsed, "mb_per_s": float64(len(lats)*(*size)) / elapsed / 1e6,
		"ack_ms_p50": pct(lats, 50), "ack_ms_p99": pct(lats, 99)})
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: wpctl write|read|tail|bench [flags]  (wpctl CMD -h for flags)")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "write":
		cmdWrite(os.Args[2:])
	case "read":
		cmdRead(os.Args[2:], false)
	case "tail":
		cmdRead(os.Args[2:], true)
	case "bench":
		cmdBench(os.Args[2:])
	default:
		fmt.Fprintf(os.Stderr, "unknown command %q: write|read|tail|bench\n", os.Args[1])
		os.Exit(2)
	}
}
