def handle(event, context):
    """Return a response for one request.

    event.body (bytes), event.headers, event.method, event.query, event.path;
    return a str/bytes body or {"statusCode": int, "body": ..., "headers": {...}}.
    """
    return {
        "statusCode": 200,
        "body": "Hello from quart-python",
        "headers": {"Content-Type": "text/plain"},
    }
