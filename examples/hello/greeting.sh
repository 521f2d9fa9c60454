#!/bin/sh
# Prints what the build recorded about the platform it ran on.
echo "$(cat /app/greeting.txt) on $(cat /app/platform.txt) ($(cat /app/arch.txt))"
