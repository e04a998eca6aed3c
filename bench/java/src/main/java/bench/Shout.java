package bench;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;

/** The processing step of the benchmark's uppercase function: decode the JSON document,
 * shout its text, encode it again. */
final class Shout {
    private static final ObjectMapper JSON = new ObjectMapper();

    private Shout() {}

    static byte[] apply(byte[] payload) throws IOException {
        ObjectNode doc = (ObjectNode) JSON.readTree(payload);
        doc.put("text", doc.get("text").asText().toUpperCase());
        return JSON.writeValueAsBytes(doc);
    }
}
