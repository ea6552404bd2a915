#!/usr/bin/env bash
# Keep run deliverables (teachers' student.safetensors + result.json) on the git branch `photo-teachers` of $REPO,
# so a VM reset (which keeps the repository, not $PHOTO) does not cost a teacher again. Off main: main's history
# stays free of weights. Usage: save_weights.sh RELPATH... (relative to $PHOTO/runs); restore: restore_weights.sh
PHOTO=${PHOTO:-/work/photo} REPO=${REPO:-/work/main} SHARED=${SHARED:-/work/shared}  # the photo workspace, this checkout, ../shared
set -eu
cd $REPO
export GIT_INDEX_FILE=$(mktemp)
parent=$(git rev-parse -q --verify refs/heads/photo-teachers || true)
if [ -n "$parent" ]; then git read-tree "$parent"; else git read-tree --empty; fi
for rel in "$@"; do
  blob=$(git hash-object -w "$PHOTO/runs/$rel")
  git update-index --add --cacheinfo "100644,$blob,$rel"
done
tree=$(git write-tree)
commit=$(git commit-tree "$tree" ${parent:+-p "$parent"} -m "photo run deliverables: $*")
git update-ref refs/heads/photo-teachers "$commit"
rm -f "$GIT_INDEX_FILE"
git ls-tree -r --name-only photo-teachers
