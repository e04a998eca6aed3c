"""The Kafka binder (aiokafka): topics, consumer groups, partitions, dead-letter topics and
transactions, wire-compatible with Spring Cloud Stream's Kafka binder."""
