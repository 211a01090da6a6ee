#!/bin/sh
# Builds zlib from the exported tag in $SOURCE_DIR and installs it into
# $DESTDIR under /usr. farmhand packages DESTDIR by the [[package]] globs.
set -eu

cd "$SOURCE_DIR"
# zlib's configure is not autoconf: it takes only the options below.
CFLAGS="-O2 -g0" ./configure --prefix=/usr --libdir=/usr/lib
make -j"$(nproc)"
make test
make install DESTDIR="$DESTDIR"
