"""The node proxy: an L4 TCP proxy forwarding with splice(2) through a pipe pool.

config (file format and schema) -> master (listeners, workers, reload) -> worker (epoll
loop) -> forward (one direction's state machine) over splice (the syscall edge) and
pipepool (pipes reused across transfers); balance chooses backends; status reads a
running proxy from outside; sweep stops it for `fastpath down`.
"""
