#!/bin/sh
# Offline stand-in for azvmimagebuilder's quickquickstarts/customizeScript.sh (served through --map-uri in the
# rehearsal tests): the same kind of work -- a greeting and a build-artifacts folder -- without any network.
set -e
echo "Hello World! from the aib-sdk rehearsal"
sudo mkdir -p /buildScripts
echo "customizeScript.sh ran" | sudo tee /buildScripts/imageBuilder.md
