"""Progress bars on stderr: named stages, and training steps."""

from __future__ import annotations

import sys
from collections.abc import Sequence


class Progress:
    """A progress bar over named stages, on stderr; silent with `quiet`."""

    def __init__(self, stages: Sequence[str], *, quiet: bool, desc: str):
        from tqdm.auto import tqdm  # on use: `--help` must not load it

        self._desc = desc
        self._bar = tqdm(
            total=len(stages),
            desc=desc,
            disable=quiet,
            leave=False,
            file=sys.stderr,
            bar_format="{desc} {n_fmt}/{total_fmt} |{bar:20}| [{elapsed}]",
        )
        self._started = False

    def __call__(self, stage: str) -> None:
        if self._started:
            self._bar.update(1)
        self._started = True
        self._bar.set_description_str(f"{self._desc}: {stage}")

    def close(self) -> None:
        if self._started:
            self._bar.update(1)
        self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def training_progress(quiet: bool):
    """A Keras callback drawing a tqdm bar over every training step.

    Built on call so that importing this module does not import Keras.
    """
    import keras
    from tqdm.auto import tqdm

    class TrainingProgress(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self._bar = None

        def on_train_begin(self, logs=None):
            epochs = self.params.get("epochs", 1)
            steps = self.params.get("steps") or 0
            self._bar = tqdm(
                total=epochs * steps,
                desc="train",
                unit="step",
                disable=quiet,
                leave=False,
                file=sys.stderr,
            )

        def on_train_batch_end(self, batch, logs=None):
            self._bar.update(1)

        def on_epoch_end(self, epoch, logs=None):
            shown = {
                k: f"{float(v):.3f}"
                for k, v in (logs or {}).items()
                if k in ("loss", "accuracy")
            }
            self._bar.set_postfix(epoch=epoch + 1, **shown)

        def on_train_end(self, logs=None):
            self._bar.close()

    return TrainingProgress()
