"""What decides where a request goes and whether it may: routes over several targets with retries, failover and
circuit breakers (`routes`), and the limits of the keys that call (`keys`)."""
