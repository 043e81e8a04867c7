"""Network interfaces of the backend: websocket, MPI, in-process queue (exactly one runs)."""
