#!/bin/sh
# Run nginx in the foreground and reload it whenever the API replicas' addresses
# change. nginx resolves the upstream name "api" only when it loads its
# configuration, and replicas get new addresses when they are restarted (e.g. to
# load newly trained models) or scaled; without a reload nginx would keep
# sending requests to addresses that are gone.
set -eu

NAME=${SEQCAST_UPSTREAM_NAME:-api}
EVERY=${SEQCAST_UPSTREAM_POLL_S:-2}

addresses() {
    getent ahostsv4 "$NAME" 2>/dev/null | awk '{print $1}' | sort -u | tr '\n' ' ' || true
}

nginx -g 'daemon off;' &
pid=$!
# Docker's nginx image stops with SIGQUIT (graceful); compose may send SIGTERM.
# Either way nginx gets QUIT: finish the requests in flight, then exit.
stopping=0
trap 'stopping=1; kill -QUIT "$pid" 2>/dev/null || true' QUIT TERM INT

last=$(addresses)
echo "nginx-start: $NAME is ${last:-unresolved}" >&2
while [ "$stopping" = 0 ] && kill -0 "$pid" 2>/dev/null; do
    sleep "$EVERY" &
    wait $! || true
    now=$(addresses)
    if [ "$stopping" = 0 ] && [ -n "$now" ] && [ "$now" != "$last" ]; then
        if nginx -t -q; then
            echo "nginx-start: $NAME is now $now; reloading" >&2
            nginx -s reload
            last=$now
        fi
    fi
done
wait "$pid"
