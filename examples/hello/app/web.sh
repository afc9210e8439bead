#!/bin/sh
# The `web` process: busybox httpd on port 8080. `/` is app/www/cgi-bin/index.cgi (the
# instance's identity), `/healthz` answers `ok` (the health check).
echo "web: serving on :8080 as instance ${VT_INSTANCE_ID:-?} of release ${VT_RELEASE_ID:-?}"
exec httpd -f -p 8080 -h /app/www
