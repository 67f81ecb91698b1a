"""The HTTP edge: the client's socket, the proxied request top to bottom, and the app's connection.

listener (deadlines and caps on the client's socket) -> proxy (one request's life) -> headers (what
crosses, each way) -> upstream (the app's pooled connections); websocket and the admin endpoints
beside them. The edge asks the session layer (cookieguard.session) what to do with the cookies.
"""
