#!/bin/sh
# An idle module: does nothing until stopped.
exec sleep 100000
