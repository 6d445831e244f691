"""customer_context: collect, assemble and serve per-customer context to customer-facing AI.

This package is shipped as the core Lambda layer (``/opt/python/customer_context``) and installed
as an ordinary package for the local stack, the CLI and the tests. Importing it touches neither AWS
nor the environment; heavy analytics dependencies are imported only by the modules that need them.
"""

__version__ = "0.1.0"
