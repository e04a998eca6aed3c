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
 * <p>Arguments: amqp-uri input-queue output-exchange prefetch messages
 */
public final class RabbitLoop {
    /** Outputs confirmed so far (written by the confirm thread only). */
    private static long confirmed;

    private RabbitLoop() {}

    public static void main(String[] args) throws Exception {
        String uri = args[0];
        String queue = args[1];
        String exchange = args[2];
        int prefetch = Integer.parseInt(args[3]);
        long messages = Long.parseLong(args[4]);

        ConnectionFactory factory = new ConnectionFactory();
        factory.setUri(uri);
        AMQP.BasicProperties props = new AMQP.BasicProperties.Builder()
            .contentType("application/json").deliveryMode(2).build();
        Timing timing = new Timing(messages);
        CountDownLatch finished = new CountDownLatch(1);
        AtomicReference<String> failure = new AtomicReference<>();
        // publish sequence number -> delivery tag of the input that caused it
        ConcurrentSkipListMap<Long, Long> open = new ConcurrentSkipListMap<>();
        Set<Long> singles = new HashSet<>();
        try (Connection in = factory.newConnection(); Connection out = factory.newConnection()) {
            Channel pub = out.createChannel();
            Channel con = in.createChannel();
            pub.confirmSelect();
            pub.addReturnListener(r -> failure.compareAndSet(null, "returned: " + r.getReplyText()));
            pub.addConfirmListener(
                (seq, multiple) -> {
                    // Called on the publishing connection's thread only.
                    long tag = -1;
                    if (multiple) {
                        Map<Long, Long> upto = open.headMap(seq, true);
                        for (Long t : upto.values()) {
                            tag = t;
                            confirmed++;
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
                        confirmed++;
                    }
                    if (tag >= 0) {
                        con.basicAck(tag, true);
                    }
                    if (confirmed >= messages) {
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
                    return;  // more than asked for: left unacknowledged, nothing is counted
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
                pub.basicPublish(exchange, exchange, true, props, body);
                timing.hit();
            };
            con.basicConsume(queue, false, deliver, tag -> {});
            System.out.println("READY");
            System.out.flush();
            if (!finished.await(300, TimeUnit.SECONDS)) {
                failure.compareAndSet(null, "timed out");
            }
        }
        if (failure.get() != null) {
            System.out.println("FAILED " + failure.get());
            System.exit(1);
        }
        System.out.println(timing.result(""));
    }
}
