#!/bin/sh
# Installs bonker-agent on a Raspberry Pi as a systemd service.
#
#   sudo ./install.sh ./bonker-agent          # the binary built for this Pi (see README.md)
#
# What it does, each step safe to repeat:
#   - creates the system user `bonker` (no login, no home) and adds it to the `gpio` group;
#   - installs the binary as /usr/local/bin/bonker-agent;
#   - installs /etc/bonker/agent.toml from agent.toml next to this script, unless one exists;
#   - installs and enables bonker-agent.service, and (re)starts it once the config names a desk;
#   - warns when the hardware PWM overlay is missing from the boot config.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
binary=${1:-"$here/bonker-agent"}

fail() {
    echo "install.sh: $*" >&2
    exit 1
}

[ "$(id -u)" -eq 0 ] || fail "run as root: sudo $0 $*"
[ -f "$binary" ] || fail "no binary at $binary; pass the path of the bonker-agent built for this Pi"
[ -f "$here/bonker-agent.service" ] || fail "bonker-agent.service missing next to this script"
[ -f "$here/agent.toml" ] || fail "agent.toml missing next to this script"
"$binary" --version >/dev/null 2>&1 ||
    fail "$binary does not run here (built for another architecture? see README.md)"

# Raspberry Pi OS has the gpio group and udev rules that give it /dev/gpiomem and /sys/class/pwm.
if ! getent group gpio >/dev/null; then
    echo "install.sh: warning: no gpio group; creating one, but GPIO and PWM device permissions" >&2
    echo "            come from Raspberry Pi OS's udev rules, which this system may lack" >&2
    groupadd --system gpio
fi
if ! id bonker >/dev/null 2>&1; then
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin --comment "bonker desk agent" bonker
fi
usermod --append --groups gpio bonker

install -m 0755 "$binary" /usr/local/bin/bonker-agent
install -d -m 0750 -o root -g bonker /etc/bonker
if [ -e /etc/bonker/agent.toml ]; then
    echo "keeping the existing /etc/bonker/agent.toml"
else
    install -m 0640 -o root -g bonker "$here/agent.toml" /etc/bonker/agent.toml
    echo "installed /etc/bonker/agent.toml: set desk, namespaces and [mqtt] url in it"
fi
install -m 0644 "$here/bonker-agent.service" /etc/systemd/system/bonker-agent.service

# Hardware PWM needs the overlay (driver = "pwm"); newer Raspberry Pi OS keeps the boot config in
# /boot/firmware, older releases in /boot.
boot_config=/boot/firmware/config.txt
[ -f "$boot_config" ] || boot_config=/boot/config.txt
if [ -f "$boot_config" ] && ! grep -Eq '^[[:space:]]*dtoverlay=pwm' "$boot_config"; then
    echo "install.sh: warning: no dtoverlay=pwm in $boot_config; for servo.driver = \"pwm\" add" >&2
    echo "            the line  dtoverlay=pwm  and reboot (or use servo.driver = \"softpwm\")" >&2
fi

systemctl daemon-reload
# time-sync.target (which the agent starts after) waits for the clock to be synchronised only with
# this service enabled; without it a Pi without a real-time clock starts with last boot's time.
if systemctl cat systemd-time-wait-sync.service >/dev/null 2>&1; then
    systemctl enable systemd-time-wait-sync.service
fi
systemctl enable bonker-agent.service
if grep -Eq '^[[:space:]]*desk[[:space:]]*=[[:space:]]*"CHANGE-ME"' /etc/bonker/agent.toml; then
    echo "not starting yet: edit /etc/bonker/agent.toml, then: sudo systemctl restart bonker-agent"
else
    systemctl restart bonker-agent.service
    echo "bonker-agent started; follow it with: journalctl -u bonker-agent -f"
fi
