"""The two teacher objectives a run can train, pix2pix and CycleGAN, each as one object that states its facts.

Every module that behaves differently per task asks its ``Task`` (``TASKS[cfg.task]``) instead of comparing
the task's name: which discriminator it builds, whether it pools fakes, which data and schedule it accepts, and
what its reference scripts use where the config says ``auto``. The config keeps the name (``task: pix2pix``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    """What a task's objective needs and what its reference scripts use (DCD-official scripts/resnet_pix2pix/* and
    scripts/cycle_gan/*)."""

    name: str
    conditional_disc: bool  # the discriminator judges cat(A, image) (pix2pix) instead of the image alone
    two_way: bool  # trains a B->A generator and a discriminator of A beside the A->B ones (cycle + identity losses)
    pools_fakes: bool  # the discriminators see a pool of past fakes (loss.pool_size), not only the newest
    needs_paired: bool  # its loss reads the target B of each A (data.mode=paired)
    burst_schedule: bool  # distill.schedule=burst (the CycleGAN reference's student bursts) applies to it
    gan_mode: str  # loss.gan_mode when auto
    lambda_dcd: float  # distill.lambda_dcd when auto
    ndf: int  # model.ndf when auto
    fid_vs_train_test: bool  # the papers' protocol for unpaired translation: FID also against every real train+test target

    def disc_channels(self, input_nc: int, output_nc: int) -> int:
        """Input channels of the discriminator of B: cat(A, B) when conditional, B alone otherwise."""
        return input_nc + output_nc if self.conditional_disc else output_nc

    def pool_size(self, configured: int) -> int:
        """Past fakes shown to its discriminators: loss.pool_size when the task pools them, else none."""
        return configured if self.pools_fakes else 0


PIX2PIX = Task(
    name="pix2pix", conditional_disc=True, two_way=False, pools_fakes=False, needs_paired=True, burst_schedule=False,
    gan_mode="hinge", lambda_dcd=1.0, ndf=128, fid_vs_train_test=False,
)
CYCLEGAN = Task(
    name="cyclegan", conditional_disc=False, two_way=True, pools_fakes=True, needs_paired=False, burst_schedule=True,
    gan_mode="lsgan", lambda_dcd=0.1, ndf=64, fid_vs_train_test=True,
)

TASKS: dict[str, Task] = {"pix2pix": PIX2PIX, "cyclegan": CYCLEGAN}  # the config's `task` names them
