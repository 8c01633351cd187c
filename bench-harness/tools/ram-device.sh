#!/bin/sh
# ram-device.sh up [GIB] | down
#
# A RAM-backed block device for telling the broker's limits from the disk's: an ext4
# filesystem (no journal, like the development VM's root) on a loop device whose backing
# file lives in /dev/shm. Direct IO and fdatasync work on it as on a disk, but cost no device
# time, so a run with `--data-parent /mnt/shardline-ram` is bound by CPU alone. Compare it
# with the same run on the real disk and with `shardline-bench --device-probe`.
#
# Needs root (losetup, mount; the filesystem's root directory belongs to root) and GIB GiB
# of /dev/shm (default 13), reserved at once: a 10 s run at 400k msg/s of 1 KiB writes about
# 5 GiB, and a full device fails the run.
set -eu
MOUNT=/mnt/shardline-ram
IMAGE=/dev/shm/shardline-ram.img

detach_all() {
    for loop in $(losetup -j "$IMAGE" -O NAME -n 2>/dev/null); do
        losetup -d "$loop"
    done
}

case "${1:-}" in
up)
    GIB=${2:-13}
    if mountpoint -q "$MOUNT" || [ -e "$IMAGE" ]; then
        echo "$MOUNT or $IMAGE exists already; run '$0 down' first" >&2
        exit 1
    fi
    # Undo a half-made device (failed fallocate, mkfs or mount) instead of leaving the
    # image's memory held by a loop device.
    trap 'detach_all; rm -f "$IMAGE"' EXIT
    fallocate -l "${GIB}G" "$IMAGE"
    LOOP=$(losetup --find --show "$IMAGE")
    mkfs.ext4 -q -O ^has_journal "$LOOP"
    mkdir -p "$MOUNT"
    mount "$LOOP" "$MOUNT"
    trap - EXIT
    echo "$LOOP mounted on $MOUNT (${GIB} GiB of RAM); use --data-parent $MOUNT"
    ;;
down)
    if mountpoint -q "$MOUNT"; then
        umount "$MOUNT"
    fi
    detach_all
    rm -f "$IMAGE"
    echo "$MOUNT is unmounted and its loop device and backing file are gone"
    ;;
*)
    echo "usage: $0 up [GIB] | down" >&2
    exit 2
    ;;
esac
