"""How one service calls another: in-process when both run here, over HTTP otherwise.

A service never imports another service's internals; it asks `flights_client(runtime)` or
`auth_client(runtime)` for a client and gets the same answers and exceptions either way.
"""
