package interop;

import java.util.Locale;
import java.util.function.Consumer;
import java.util.function.Function;

import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.context.annotation.Bean;
import org.springframework.messaging.Message;
import org.springframework.messaging.support.MessageBuilder;

/**
 * A plain Spring Cloud Stream app, as a Java team would write it: function beans and
 * nothing else. Which of them are bound, to which destinations and on which binder, is
 * chosen by the tests on the command line; everything else keeps Spring's defaults.
 */
@SpringBootApplication
public class InteropApplication {

    /** The header Spring's router reads to choose a function. */
    static final String DEFINITION = "spring.cloud.function.definition";

    public static void main(String[] args) {
        SpringApplication.run(InteropApplication.class, args);
    }

    /** An order as JSON; the Python side has the same fields in a pydantic model. */
    public record Order(String id, String item, int quantity, double unitPrice) {
    }

    /** What {@link #invoice()} makes of an order. */
    public record Invoice(String orderId, double total, boolean bulk) {
    }

    @Bean
    public Function<String, String> uppercase() {
        return word -> word.toUpperCase(Locale.ROOT);
    }

    @Bean
    public Function<String, String> reverse() {
        return word -> new StringBuilder(word).reverse().toString();
    }

    /** Passes words on unchanged: bound with a partitioned output, it shows where Spring sends a key. */
    @Bean
    public Function<String, String> echo() {
        return word -> word;
    }

    @Bean
    public Function<Order, Invoice> invoice() {
        return order -> new Invoice(order.id(), order.quantity() * order.unitPrice(), order.quantity() >= 100);
    }

    /** Refuses any word containing "poison": with a DLQ configured, Spring dead-letters it. */
    @Bean
    public Function<String, String> fragile() {
        return word -> {
            if (word.contains("poison")) {
                throw new IllegalArgumentException("fragile refuses '" + word + "'");
            }
            return word.toUpperCase(Locale.ROOT);
        };
    }

    /**
     * "target:payload" becomes payload, labelled with the function that should handle it, as a
     * Spring producer labels messages for a router downstream.
     */
    @Bean
    public Function<String, Message<String>> label() {
        return text -> {
            int colon = text.indexOf(':');
            return MessageBuilder.withPayload(text.substring(colon + 1))
                    .setHeader(DEFINITION, text.substring(0, colon))
                    .build();
        };
    }

    // Consumers that print what they got (payload and every header with its Java type) on one
    // line of standard output each, which the tests read.

    @Bean
    public Consumer<Message<byte[]>> inbox() {
        return message -> Recorder.print("inbox", message);
    }

    @Bean
    public Consumer<Message<byte[]>> share() {
        return message -> Recorder.print("share", message);
    }

    @Bean
    public Consumer<Message<byte[]>> deadLetters() {
        return message -> Recorder.print("deadLetters", message);
    }
}
