package bench;

import java.lang.management.ManagementFactory;

/**
 * When the first and the N-th message were processed, and the CPU time this JVM spent
 * between them: the same points the Python side's probe times.
 */
final class Timing {
    private final long target;
    private long count;
    private long first;
    private long last;
    private long firstCpu;
    private long lastCpu;

    Timing(long target) {
        this.target = target;
    }

    /** One more message processed; true once the target is reached. */
    boolean hit() {
        long n = ++count;
        if (n == 1) {
            first = System.nanoTime();
            firstCpu = cpu();
        }
        if (n == target) {
            last = System.nanoTime();
            lastCpu = cpu();
        }
        return n >= target;
    }

    long target() {
        return target;
    }

    boolean done() {
        return count >= target;
    }

    /** The line the benchmark reads back. */
    String result(String extra) {
        return String.format(
            "RESULT {\"messages\": %d, \"seconds\": %.9f, \"cpu_seconds\": %.9f%s}",
            count, (last - first) / 1e9, (lastCpu - firstCpu) / 1e9, extra);
    }

    private static long cpu() {
        java.lang.management.OperatingSystemMXBean os = ManagementFactory.getOperatingSystemMXBean();
        if (os instanceof com.sun.management.OperatingSystemMXBean sun) {
            return sun.getProcessCpuTime();
        }
        return 0L;
    }
}
