"""The RabbitMQ binder (pika): Spring Cloud Stream's exchanges, group queues and DLQs."""
