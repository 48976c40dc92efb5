"""A pool task that kills its worker process, as the kernel's OOM killer would. In a module of its own,
importing nothing heavy, so a spawned worker that unpickles it starts in a fraction of a second."""

import os


def die(task: object) -> None:
    os._exit(9)


class Job:
    """Stands in for ``ingest_audio.AudioJob`` where the task never runs: unpickling this needs no torch."""

    def __init__(self, audio: str):
        self.audio, self.start, self.rewrite = audio, None, True
