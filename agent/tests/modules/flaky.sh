#!/bin/sh
# Healthy for a second (the probe checks the file), then unhealthy but alive.
touch healthy
sleep 1
rm -f healthy
exec sleep 100000
