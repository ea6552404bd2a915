#!/usr/bin/env bash
# Put back what save_weights.sh kept on branch photo-teachers, where the run folder lacks it.
PHOTO=${PHOTO:-/work/photo} REPO=${REPO:-/work/main} SHARED=${SHARED:-/work/shared}  # the photo workspace, this checkout, ../shared
set -eu
cd $REPO
git rev-parse -q --verify refs/heads/photo-teachers > /dev/null || exit 0
git ls-tree -r --name-only photo-teachers | while read -r rel; do
  dest=$PHOTO/runs/$rel
  [ -f "$dest" ] && continue
  mkdir -p "$(dirname "$dest")"
  git show "photo-teachers:$rel" > "$dest.tmp" && mv "$dest.tmp" "$dest" && echo "restored $dest"
done
