"""The master process: front end, pools of workers, and their supervision.

```
 listeners ──accept──▶ FrontEnd ──head──▶ Pool ──Dispatch(+fd)──▶ WorkerProcess ──▶ worker
                          │ 400/404/408/414/431/503       ▲ Ready, Closed, Pong
                          ▼                               │ pidfd (exit), stdout/stderr pipes
                    answered here                   custody of every dispatched fd
```
"""
