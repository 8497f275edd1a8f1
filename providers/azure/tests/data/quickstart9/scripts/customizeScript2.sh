#!/bin/sh
# aib-sdk's offline stand-in for quickquickstarts/customizeScript2.sh (the template's "CheckSumCompareShellScript"
# step, run only when its sha256Checksum matches): leaves a second file behind to prove it ran.
set -e
echo "customizeScript2.sh: the checksum matched"
sudo mkdir -p /buildScripts
echo "customizeScript2.sh ran" | sudo tee /buildScripts/imageBuilder2.md
