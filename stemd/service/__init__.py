"""Running under a service manager: systemd/launchd units, sd_notify, folder access."""
