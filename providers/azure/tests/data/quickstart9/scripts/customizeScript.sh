#!/bin/sh
# aib-sdk's offline stand-in for quickquickstarts/customizeScript.sh of the quickstart 9 template (served through
# --map-uri / BuildOptions.uri_map in test_azure_quickstart9_vm.py): a greeting and a build-scripts folder, no network.
set -e
echo "Hello World from the aib-sdk copy of quickquickstarts 9"
sudo mkdir -p /buildScripts
echo "customizeScript.sh ran" | sudo tee /buildScripts/imageBuilder.md
