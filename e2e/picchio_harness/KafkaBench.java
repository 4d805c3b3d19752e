// The Kafka side of `python -m picchio_harness.bench_peers` (see e2e/picchio_harness/kafka.py):
// Kafka's own Java client, driven over stdin/stdout with one JSON object per output line.
// Compiled by kafka.py (javac, against the Maven-fetched jars) into the cache; nothing here is
// Kafka's code.
//
//   admin BOOTSTRAP BROKERS TIMEOUT_S TOPIC:RF[:key=val,...]...  wait for BROKERS brokers, create the topics
//   delete BOOTSTRAP TOPIC...                                    delete the topics (their data goes with them)
//   produce BOOTSTRAP TOPIC SIZE INFLIGHT                         then stdin: "warmup N" | "run SECONDS" | "quit"
//   tail BOOTSTRAP TOPIC ENTRIES INTERVAL_MS                      acks=all producer + a consumer in another JVM
//   consume BOOTSTRAP TOPIC                                       (the other JVM) prints each value it sees
import java.io.*;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.*;
import java.util.concurrent.*;
import java.util.concurrent.atomic.*;

import org.apache.kafka.clients.admin.*;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.clients.producer.*;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class KafkaBench {
    static void emit(String json) {
        System.out.println(json);
        System.out.flush();
    }

    static String q(String s) {
        return "\"" + s.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", " ") + "\"";
    }

    static String list(List<Double> xs) {
        StringBuilder b = new StringBuilder("[");
        for (int i = 0; i < xs.size(); i++) {
            if (i > 0) b.append(',');
            b.append(String.format(Locale.ROOT, "%.4f", xs.get(i)));
        }
        return b.append(']').toString();
    }

    /** The producer a user tuning for acks=all throughput would run: group commit through
     *  batching (one batch may hold all records in flight), no linger, no compression. */
    static KafkaProducer<byte[], byte[]> producer(String bootstrap, int size, int inflight) {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("acks", "all");
        p.put("linger.ms", "0");
        p.put("compression.type", "none");
        // up to 4 MiB of records per batch: with 5 requests in flight (the idempotent producer's
        // maximum) 16 × 1 MiB still fit on the wire; buffer.memory large enough never to block send()
        int batch = Math.max(16384, Math.min(4 << 20, size * inflight) + 65536);
        p.put("batch.size", Integer.toString(batch));
        p.put("max.request.size", Integer.toString(64 << 20));
        p.put("buffer.memory", Long.toString(Math.max(128L << 20, 8L * batch)));
        p.put("key.serializer", ByteArraySerializer.class.getName());
        p.put("value.serializer", ByteArraySerializer.class.getName());
        return new KafkaProducer<>(p);
    }

    static void admin(String bootstrap, int brokers, double timeoutS, List<String> specs) throws Exception {
        long deadline = System.nanoTime() + (long) (timeoutS * 1e9);
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("request.timeout.ms", "5000");
        p.put("default.api.timeout.ms", "10000");
        try (Admin a = Admin.create(p)) {
            String last = "";
            while (true) {
                try {
                    int n = a.describeCluster().nodes().get(5, TimeUnit.SECONDS).size();
                    if (n >= brokers) break;
                    last = n + " brokers";
                } catch (Exception e) {
                    last = e.toString();
                }
                if (System.nanoTime() > deadline) throw new TimeoutException("brokers not up: " + last);
                Thread.sleep(200);
            }
            List<NewTopic> topics = new ArrayList<>();
            for (String spec : specs) {
                String[] f = spec.split(":", 3);
                NewTopic t = new NewTopic(f[0], 1, Short.parseShort(f[1]));
                if (f.length > 2 && !f[2].isEmpty()) {
                    Map<String, String> cfg = new HashMap<>();
                    for (String kv : f[2].split(",")) {
                        String[] x = kv.split("=", 2);
                        cfg.put(x[0], x[1]);
                    }
                    t.configs(cfg);
                }
                topics.add(t);
            }
            a.createTopics(topics).all().get(30, TimeUnit.SECONDS);
            for (NewTopic t : topics) {  // a leader and a full ISR before anyone produces
                while (true) {
                    try {
                        var d = a.describeTopics(List.of(t.name())).allTopicNames().get(5, TimeUnit.SECONDS).get(t.name());
                        var part = d.partitions().get(0);
                        if (part.leader() != null && part.isr().size() == t.replicationFactor()) break;
                    } catch (Exception e) {
                        // not yet
                    }
                    if (System.nanoTime() > deadline) throw new TimeoutException("topic " + t.name() + " has no full ISR");
                    Thread.sleep(100);
                }
            }
        }
        emit("{\"op\":\"ready\"}");
    }

    static void delete(String bootstrap, List<String> topics) throws Exception {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        try (Admin a = Admin.create(p)) {
            a.deleteTopics(topics).all().get(60, TimeUnit.SECONDS);
        }
        emit("{\"op\":\"deleted\"}");
    }

    static void produce(String bootstrap, String topic, int size, int inflight) throws Exception {
        byte[] payload = new byte[size];
        new Random(1).nextBytes(payload);
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        try (KafkaProducer<byte[], byte[]> prod = producer(bootstrap, size, inflight)) {
            emit("{\"op\":\"open\"}");
            String line;
            while ((line = in.readLine()) != null) {
                String[] cmd = line.trim().split(" ");
                if (cmd[0].equals("quit")) break;
                if (cmd[0].equals("warmup")) {
                    int n = Integer.parseInt(cmd[1]);
                    for (int i = 0; i < n; i++) prod.send(new ProducerRecord<>(topic, payload)).get(60, TimeUnit.SECONDS);
                    emit("{\"op\":\"warm\"}");
                    continue;
                }
                double seconds = Double.parseDouble(cmd[1]);
                Semaphore sem = new Semaphore(inflight);
                List<Double> lat = Collections.synchronizedList(new ArrayList<>());
                AtomicInteger errors = new AtomicInteger();
                AtomicReference<String> firstError = new AtomicReference<>("");
                long t0 = System.nanoTime();
                long end = t0 + (long) (seconds * 1e9);
                while (System.nanoTime() < end) {
                    sem.acquire();
                    long s = System.nanoTime();
                    prod.send(new ProducerRecord<>(topic, payload), (md, e) -> {
                        if (e != null) {
                            errors.incrementAndGet();
                            firstError.compareAndSet("", e.toString());
                        } else {
                            lat.add((System.nanoTime() - s) / 1e6);
                        }
                        sem.release();
                    });
                }
                sem.acquire(inflight);  // every record of this slice acknowledged
                sem.release(inflight);
                double elapsed = (System.nanoTime() - t0) / 1e9;
                synchronized (lat) {
                    emit("{\"op\":\"slice\",\"appends\":" + lat.size() + ",\"seconds\":" + elapsed + ",\"errors\":"
                         + errors.get() + ",\"first_error\":" + q(firstError.get()) + ",\"lat_ms\":" + list(lat) + "}");
                }
            }
        }
    }

    static void tail(String bootstrap, String topic, int entries, int intervalMs) throws Exception {
        String java = ProcessHandle.current().info().command().orElse("java");
        ProcessBuilder pb = new ProcessBuilder(java, "-cp", System.getProperty("java.class.path"),
            "-Dlog4j2.configurationFile=" + System.getProperty("log4j2.configurationFile", ""),
            "KafkaBench", "consume", bootstrap, topic);
        pb.redirectError(ProcessBuilder.Redirect.INHERIT);
        Process child = pb.start();
        BlockingQueue<String> seen = new LinkedBlockingQueue<>();
        Map<String, Long> seenAt = new ConcurrentHashMap<>();
        Thread pump = new Thread(() -> {
            try (BufferedReader r = new BufferedReader(new InputStreamReader(child.getInputStream(), StandardCharsets.UTF_8))) {
                String l;
                while ((l = r.readLine()) != null) {
                    seenAt.put(l.trim(), System.nanoTime());
                    seen.put(l.trim());
                }
            } catch (Exception e) {
                // child gone
            }
        });
        pump.setDaemon(true);
        pump.start();
        List<Double> e2e = new ArrayList<>(), ack = new ArrayList<>(), ackToSeen = new ArrayList<>();
        try (KafkaProducer<byte[], byte[]> prod = producer(bootstrap, 64, 1)) {
            long deadline = System.nanoTime() + 60_000_000_000L;
            int m = 0;
            while (true) {  // the other JVM is ready once it has seen a marker
                String marker = "marker-" + (m++);
                prod.send(new ProducerRecord<>(topic, marker.getBytes(StandardCharsets.UTF_8))).get(30, TimeUnit.SECONDS);
                String got = seen.poll(500, TimeUnit.MILLISECONDS);
                if (got != null) break;
                if (System.nanoTime() > deadline) throw new TimeoutException("the consumer process never saw a record");
            }
            Thread.sleep(300);
            seen.clear();
            for (int i = 0; i < entries; i++) {
                String v = "t" + i;
                long s = System.nanoTime();
                prod.send(new ProducerRecord<>(topic, v.getBytes(StandardCharsets.UTF_8))).get(30, TimeUnit.SECONDS);
                long acked = System.nanoTime();
                while (true) {
                    String got = seen.poll(5, TimeUnit.SECONDS);
                    if (got == null) throw new TimeoutException("the consumer process did not see " + v);
                    if (got.equals(v)) break;
                }
                long at = seenAt.get(v);
                e2e.add((at - s) / 1e6);
                ack.add((acked - s) / 1e6);
                ackToSeen.add((at - acked) / 1e6);
                Thread.sleep(intervalMs);
            }
        } finally {
            child.destroy();
            child.waitFor(10, TimeUnit.SECONDS);
            child.destroyForcibly();
        }
        emit("{\"op\":\"tail\",\"entries\":" + entries + ",\"e2e_ms\":" + list(e2e) + ",\"ack_ms\":" + list(ack)
             + ",\"ack_to_seen_ms\":" + list(ackToSeen) + "}");
    }

    static void consume(String bootstrap, String topic) {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("key.deserializer", ByteArrayDeserializer.class.getName());
        p.put("value.deserializer", ByteArrayDeserializer.class.getName());
        p.put("enable.auto.commit", "false");
        try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(p)) {
            TopicPartition tp = new TopicPartition(topic, 0);
            c.assign(List.of(tp));
            c.seekToEnd(List.of(tp));
            c.position(tp);
            PrintStream out = System.out;
            while (true) {
                for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(100))) {
                    out.println(new String(r.value(), StandardCharsets.UTF_8));
                }
                out.flush();
                if (out.checkError()) return;  // the producer side went away
            }
        }
    }

    public static void main(String[] a) throws Exception {
        switch (a[0]) {
            case "admin" -> admin(a[1], Integer.parseInt(a[2]), Double.parseDouble(a[3]), Arrays.asList(a).subList(4, a.length));
            case "delete" -> delete(a[1], Arrays.asList(a).subList(2, a.length));
            case "produce" -> produce(a[1], a[2], Integer.parseInt(a[3]), Integer.parseInt(a[4]));
            case "tail" -> tail(a[1], a[2], Integer.parseInt(a[3]), Integer.parseInt(a[4]));
            case "consume" -> consume(a[1], a[2]);
            default -> throw new IllegalArgumentException("admin|produce|tail|consume, not " + a[0]);
        }
        System.exit(0);
    }
}
