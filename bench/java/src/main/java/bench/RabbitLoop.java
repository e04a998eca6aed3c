package bench;

import com.rabbitmq.client.AMQP;
import com.rabbitmq.client.Channel;
import com.rabbitmq.client.Connection;
import com.rabbitmq.client.ConnectionFactory;
import com.rabbitmq.client.DeliverCallback;
import java.util.HashSet;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentSkipListMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;

/**
 * Consume-process-produce with RabbitMQ's own Java client, at-least-once: each delivery is
 * processed and its output published at once (persistent, mandatory) on a channel in
 * confirm mode; publisher confirms are pipelined, and an input is acknowledged
 * ({@code multiple}) once every output up to it is confirmed. One connection consumes,
 * another publishes, as the Python binder does; the prefetch is the binder's.
 *
 * <p>Arguments: amqp-uri input-queue output-exchange prefetch messages [warm-up-queue
 * warm-up-exchange warm-up-messages]: before the timed run, that many messages of the
 * warm-up queue are processed the same way into the warm-up exchange, untimed.
 */
public final class RabbitLoop {
    private static final AMQP.BasicProperties PROPS = new AMQP.BasicProperties.Builder()
        .contentType("application/json").deliveryMode(2).build();

    private RabbitLoop() {}

    public static void main(String[] args) throws Exception {
        String uri = args[0];
        String queue = args[1];
        String exchange = args[2];
        int prefetch = Integer.parseInt(args[3]);
        long messages = Long.parseLong(args[4]);

        ConnectionFactory factory = new ConnectionFactory();
        factory.setUri(uri);
        Timing timing = new Timing(messages);
        try (Connection in = factory.newConnection(); Connection out = factory.newConnection()) {
            if (args.length > 7) {
                // The JIT compiles the client's and Jackson's hot paths on messages that
                // are not timed: a Java service runs warm, and the anchor should too.
                phase(in, out, args[5], args[6], prefetch, new Timing(Long.parseLong(args[7])));
            }
            phase(in, out, queue, exchange, prefetch, timing);
        }
        System.out.println(timing.result(""));
    }

    /** Process {@code timing}'s target of messages from {@code queue} to {@code exchange},
     * on channels of their own; return once every output is confirmed and every input
     * acknowledged. */
    private static void phase(
            Connection in, Connection out, String queue, String exchange, int prefetch,
            Timing timing) throws Exception {
        CountDownLatch finished = new CountDownLatch(1);
        AtomicReference<String> failure = new AtomicReference<>();
        // publish sequence number -> delivery tag of the input that caused it
        ConcurrentSkipListMap<Long, Long> open = new ConcurrentSkipListMap<>();
        Set<Long> singles = new HashSet<>();  // confirm thread only
        long[] confirmed = {0};  // confirm thread only
        long target = timing.target();
        Channel pub = out.createChannel();
        Channel con = in.createChannel();
        pub.confirmSelect();
        pub.addReturnListener(r -> failure.compareAndSet(null, "returned: " + r.getReplyText()));
        pub.addConfirmListener(
            (seq, multiple) -> {
                long tag = -1;
                if (multiple) {
                    Map<Long, Long> upto = open.headMap(seq, true);
                    for (Long t : upto.values()) {
                        tag = t;
                        confirmed[0]++;
                    }
                    upto.clear();
                } else {
                    singles.add(seq);
                }
                // Single confirms count once everything before them is confirmed.
                Map.Entry<Long, Long> oldest;
                while ((oldest = open.firstEntry()) != null && singles.remove(oldest.getKey())) {
                    open.remove(oldest.getKey());
                    tag = oldest.getValue();
                    confirmed[0]++;
                }
                if (tag >= 0) {
                    con.basicAck(tag, true);
                }
                if (confirmed[0] >= target) {
                    finished.countDown();
                }
            },
            (seq, multiple) -> {
                failure.compareAndSet(null, "nacked");
                finished.countDown();
            });
        con.basicQos(prefetch);
        DeliverCallback deliver = (consumerTag, delivery) -> {
            if (timing.done()) {
                return;  // more than asked for: left unacknowledged, requeued at the end
            }
            byte[] body;
            try {
                body = Shout.apply(delivery.getBody());
            } catch (Exception e) {
                failure.compareAndSet(null, e.toString());
                finished.countDown();
                return;
            }
            open.put(pub.getNextPublishSeqNo(), delivery.getEnvelope().getDeliveryTag());
            pub.basicPublish(exchange, exchange, true, PROPS, body);
            timing.hit();
        };
        String tag = con.basicConsume(queue, false, deliver, t -> {});
        if (!finished.await(300, TimeUnit.SECONDS)) {
            failure.compareAndSet(null, "timed out");
        }
        if (failure.get() != null) {
            System.out.println("FAILED " + failure.get());
            System.exit(1);
        }
        con.basicCancel(tag);
        con.close();
        pub.close();
    }
}
