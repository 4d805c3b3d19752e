"""An ext4 file system in an image file on its own loop device, and a copy of
it as a power cut would leave it (the power-cut tests of the group commit)."""
from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path


def _run(*cmd: str) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(cmd)}: {r.stderr.strip()}"
    return r.stdout.strip()


class Ext4Disk:
    """An ext4 file system in an image file on its own loop device."""

    def __init__(self, image: Path, mnt: Path) -> None:
        self.image, self.mnt, self.dev = image, mnt, ""

    def mount(self, image: Path | None = None) -> None:
        self.dev = _run("losetup", "--find", "--show", str(image or self.image))
        _run("mount", "-t", "ext4", self.dev, str(self.mnt))

    def unmount(self) -> None:
        if self.dev:
            subprocess.run(["umount", "-l", str(self.mnt)], check=False)
            subprocess.run(["losetup", "-d", self.dev], check=False)
            self.dev = ""

    def writes(self) -> tuple[int, int]:
        """(writes completed, I/Os in flight) of the loop device, from sysfs."""
        f = Path(f"/sys/block/{Path(self.dev).name}/stat").read_text().split()
        return int(f[4]), int(f[8])

    def snapshot(self, to: Path, deadline: float = 20.0) -> None:
        """Copy the image while the device is quiet, and again if it was not."""
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            before = self.writes()
            if before[1] == 0:
                shutil.copyfile(self.image, to)
                if self.writes() == before:
                    return
            time.sleep(0.02)
        raise AssertionError("the loop device never went quiet for a copy")

    @classmethod
    def make(cls, image: Path, mnt: Path, size: int = 96 << 20) -> "Ext4Disk":
        mnt.mkdir(parents=True, exist_ok=True)
        with open(image, "wb") as f:
            f.truncate(size)
        _run("mkfs.ext4", "-q", "-F", str(image))
        disk = cls(image, mnt)
        disk.mount()
        return disk
