package bench;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.Future;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * Consume-process-produce with Kafka's own Java client, at-least-once: poll, process each
 * record and send its output, wait for every send's acknowledgement, then commit the
 * poll's offsets. The client settings are the Python binder's defaults (acks=all,
 * idempotence, 16 KiB batches, no linger, 500 records per poll); the Java client keeps its
 * own pipelining (up to 5 requests in flight per broker).
 *
 * <p>Arguments: bootstrap-servers input-topic output-topic group messages [warm-up-topic
 * warm-up-records]: before the timed run, a consumer of its own group processes that many
 * records of the input into the warm-up topic, untimed.
 */
public final class KafkaLoop {
    private KafkaLoop() {}

    public static void main(String[] args) throws Exception {
        String servers = args[0];
        String input = args[1];
        String output = args[2];
        String group = args[3];
        long messages = Long.parseLong(args[4]);
        String warmupOutput = args.length > 6 ? args[5] : null;
        long warmup = args.length > 6 ? Long.parseLong(args[6]) : 0;

        Properties c = new Properties();
        c.put("bootstrap.servers", servers);
        c.put("group.id", group);
        c.put("enable.auto.commit", "false");
        c.put("auto.offset.reset", "earliest");
        c.put("max.poll.records", "500");
        c.put("key.deserializer", ByteArrayDeserializer.class.getName());
        c.put("value.deserializer", ByteArrayDeserializer.class.getName());

        Properties p = new Properties();
        p.put("bootstrap.servers", servers);
        p.put("acks", "all");
        p.put("enable.idempotence", "true");
        p.put("batch.size", "16384");
        // No linger, as the Python binder: this loop waits for each poll's acknowledgements,
        // and the client's default of 5 ms held every poll's last batch back (measured:
        // 41,000 against 61,000-66,000 records/s).
        p.put("linger.ms", "0");
        p.put("key.serializer", ByteArraySerializer.class.getName());
        p.put("value.serializer", ByteArraySerializer.class.getName());

        // The headers the Python binder writes for application/json (Spring's mapping).
        RecordHeaders headers = new RecordHeaders();
        headers.add("contentType", "\"application/json\"".getBytes(StandardCharsets.UTF_8));
        headers.add("spring_json_header_types",
            "{\"contentType\":\"java.lang.String\"}".getBytes(StandardCharsets.UTF_8));
        headers.setReadOnly();

        Timing timing = new Timing(messages);
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p)) {
            producer.partitionsFor(output);  // metadata before the clock starts, as Python does
            if (warmup > 0) {
                // The JIT compiles the client's and Jackson's hot paths on records that
                // are not timed: a Java service runs warm, and the anchor should too.
                c.put("group.id", group + "-warmup");
                producer.partitionsFor(warmupOutput);
                try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(c)) {
                    loop(consumer, producer, input, warmupOutput, headers, new Timing(warmup));
                }
                c.put("group.id", group);
            }
            try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(c)) {
                loop(consumer, producer, input, output, headers, timing);
            }
        }
        System.out.println(timing.result(""));
    }

    private static void loop(
            KafkaConsumer<byte[], byte[]> consumer,
            KafkaProducer<byte[], byte[]> producer,
            String input,
            String output,
            RecordHeaders headers,
            Timing timing) throws Exception {
        consumer.subscribe(List.of(input));
        List<Future<RecordMetadata>> sends = new ArrayList<>();
        while (!timing.done()) {
            ConsumerRecords<byte[], byte[]> records = consumer.poll(Duration.ofMillis(200));
            if (records.isEmpty()) {
                continue;
            }
            for (ConsumerRecord<byte[], byte[]> record : records) {
                byte[] out = Shout.apply(record.value());
                sends.add(producer.send(
                    new ProducerRecord<byte[], byte[]>(output, (Integer) null, (byte[]) null, out, headers)));
                timing.hit();
            }
            for (Future<RecordMetadata> sent : sends) {
                sent.get();
            }
            sends.clear();
            Map<TopicPartition, OffsetAndMetadata> offsets = new HashMap<>();
            for (TopicPartition tp : records.partitions()) {
                List<ConsumerRecord<byte[], byte[]>> part = records.records(tp);
                offsets.put(tp, new OffsetAndMetadata(part.get(part.size() - 1).offset() + 1));
            }
            consumer.commitSync(offsets);
        }
    }
}
