"""The invocation hot path: route table, admission to instances, the ASGI handler.

No database query happens here: the reconciler hands the gateway an in-memory route table.
"""
