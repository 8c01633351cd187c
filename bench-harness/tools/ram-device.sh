#!/bin/sh
# ram-device.sh up [GIB] | down
#
# A RAM-backed block device for telling the broker's limits from the disk's: an ext4
# filesystem (no journal, like the development VM's root) on a loop device whose backing
# file lives in /dev/shm. Direct IO and fdatasync work on it as on a disk, but cost no device
# time, so a run with `--data-parent /mnt/shardline-ram` is bound by CPU alone. Compare it
# with the same run on the real disk and with `shardline-bench --device-probe`.
#
# Needs root (losetup, mount) and GIB GiB of free memory (default 13; a 10 s run at 400k
# msg/s of 1 KiB writes about 5 GiB, and a full device fails the run).
set -eu
MOUNT=/mnt/shardline-ram
IMAGE=/dev/shm/shardline-ram.img
case "${1:-}" in
up)
    GIB=${2:-13}
    if mountpoint -q "$MOUNT"; then
        echo "already mounted: $MOUNT" >&2
        exit 1
    fi
    truncate -s "${GIB}G" "$IMAGE"
    LOOP=$(losetup --find --show "$IMAGE")
    mkfs.ext4 -q -O ^has_journal "$LOOP"
    mkdir -p "$MOUNT"
    mount "$LOOP" "$MOUNT"
    echo "$LOOP mounted on $MOUNT (${GIB} GiB of RAM); use --data-parent $MOUNT"
    ;;
down)
    LOOP=$(findmnt -n -o SOURCE "$MOUNT" || true)
    if [ -n "$LOOP" ]; then
        umount "$MOUNT"
        losetup -d "$LOOP"
    fi
    rm -f "$IMAGE"
    echo "removed $MOUNT and its backing file"
    ;;
*)
    echo "usage: $0 up [GIB] | down" >&2
    exit 2
    ;;
esac
