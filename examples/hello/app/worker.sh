#!/bin/sh
# The `worker` process: a background job that does a unit of work every ten seconds.
n=0
echo "worker: started as instance ${VT_INSTANCE_ID:-?}"
trap 'echo "worker: stopping after $n jobs"; exit 0' TERM INT
while :; do
    n=$((n + 1))
    echo "worker: job $n done"
    sleep 10 &
    wait $!
done
