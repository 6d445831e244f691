"""Developer tools around the customer context engine: the ``customer-context`` CLI, the embedded local stack,
the demo and the cost model. Installed with the project (``pip install -e .``), never deployed: the Lambda
layer and the analytics image hold ``customer_context`` only (tests/template checks what they contain)."""
