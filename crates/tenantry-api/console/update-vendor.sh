#!/usr/bin/env bash
# Refreshes the console's vendored uPlot from the npm registry after package.json changed:
# relocks, fetches the locked tarball into vendor/ (npm checks it against the lock's integrity)
# and copies its built files to public/vendor/. The Rust test `vendored_chart_library_matches_the_lockfile`
# (crates/tenantry-api/src/console.rs) fails until the three agree.
set -euo pipefail
cd "$(dirname "$0")"
npm install --package-lock-only --ignore-scripts
version=$(node -p 'require("./package-lock.json").packages["node_modules/uplot"].version')
rm -f vendor/uplot-*.tgz
npm pack --pack-destination vendor "uplot@$version"
tgz="vendor/uplot-$version.tgz"
for f in uPlot.iife.min.js uPlot.min.css; do
    tar -xzOf "$tgz" "package/dist/$f" > "public/vendor/$f"
done
tar -xzOf "$tgz" package/LICENSE > public/vendor/uPlot.LICENSE
echo "uplot $version vendored; update VENDORED_TARBALL in src/console.rs if the version changed"
