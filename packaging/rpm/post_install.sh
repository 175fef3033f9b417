# Directories, then: first install enables both units (not started); upgrade
# try-restarts them (running jobs survive: the runner's supervisors stay).
[ -x /usr/bin/systemd-tmpfiles ] && systemd-tmpfiles --create plinth.conf || :
[ -d /run/systemd/system ] && systemctl daemon-reload || :
if [ "$1" -eq 1 ]; then
    systemctl --no-reload enable plinth-runner.service plinth-agent.service >/dev/null 2>&1 || :
else
    [ -d /run/systemd/system ] && systemctl try-restart plinth-runner.service plinth-agent.service || :
fi
