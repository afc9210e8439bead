#!/bin/sh
# The page at `/`: who answered. A secret's presence is shown, never its value.
if [ -f /run/secrets/GREETING ]; then
    secret="set ($(wc -c < /run/secrets/GREETING) bytes)"
else
    secret="not set (vt secrets set GREETING=...)"
fi
printf 'Content-Type: text/plain\r\n\r\n'
echo "${MESSAGE:-hello}"
echo "instance: ${VT_INSTANCE_ID:-unknown}"
echo "process:  ${VT_PROCESS:-unknown}"
echo "release:  ${VT_RELEASE_ID:-unknown}"
echo "secret GREETING: $secret"
