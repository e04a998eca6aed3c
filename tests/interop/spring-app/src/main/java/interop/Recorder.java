package interop;

import java.nio.charset.StandardCharsets;
import java.util.Base64;
import java.util.Map;
import java.util.TreeMap;

import org.springframework.messaging.Message;

/**
 * Prints a received message as one line, {@code RECEIVED <json>}, for the tests to read from
 * the app's output: the consumer's name, the payload (as UTF-8 text and as base64) and each
 * header as its Java type and value (byte arrays in base64).
 */
final class Recorder {

    private Recorder() {
    }

    static void print(String consumer, Message<byte[]> message) {
        StringBuilder line = new StringBuilder("RECEIVED {");
        field(line, "consumer", consumer).append(',');
        field(line, "payload", new String(message.getPayload(), StandardCharsets.UTF_8)).append(',');
        field(line, "payloadBase64", Base64.getEncoder().encodeToString(message.getPayload()));
        line.append(",\"headers\":{");
        boolean first = true;
        for (Map.Entry<String, Object> header : new TreeMap<>(message.getHeaders()).entrySet()) {
            if (!first) {
                line.append(',');
            }
            first = false;
            Object value = header.getValue();
            String type = value == null ? "null" : value.getClass().getName();
            String text = value instanceof byte[] bytes
                    ? Base64.getEncoder().encodeToString(bytes)
                    : String.valueOf(value);
            quote(line, header.getKey()).append(":{");
            field(line, "type", type).append(',');
            field(line, "value", text).append('}');
        }
        line.append("}}");
        synchronized (System.out) {
            System.out.println(line);
            System.out.flush();
        }
    }

    private static StringBuilder field(StringBuilder line, String name, String value) {
        return quote(quote(line, name).append(':'), value);
    }

    private static StringBuilder quote(StringBuilder line, String text) {
        line.append('"');
        for (int i = 0; i < text.length(); i++) {
            char c = text.charAt(i);
            switch (c) {
                case '"' -> line.append("\\\"");
                case '\\' -> line.append("\\\\");
                case '\n' -> line.append("\\n");
                case '\r' -> line.append("\\r");
                case '\t' -> line.append("\\t");
                default -> {
                    if (c < 0x20) {
                        line.append(String.format("\\u%04x", (int) c));
                    }
                    else {
                        line.append(c);
                    }
                }
            }
        }
        return line.append('"');
    }
}
