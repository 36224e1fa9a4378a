"""The worker process: a fresh interpreter that loads one app and serves it.

```
 master ──channel (SEQPACKET)──▶ bootstrap: faulthandler, Boot, load app
                                   │ Ready | StartupFailed
                                   ▼
                                 WSGI server (epoll + thread pool)
                                 or ASGI server (asyncio loop)
                                   │ writes responses straight to clients,
                                   │ the scoreboard, and the access log
```
"""
