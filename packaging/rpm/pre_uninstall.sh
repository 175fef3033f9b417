# Last removal: disable and stop both units (configuration and state stay).
if [ "$1" -eq 0 ]; then
    systemctl --no-reload disable plinth-agent.service plinth-runner.service >/dev/null 2>&1 || :
    [ -d /run/systemd/system ] && systemctl stop plinth-agent.service plinth-runner.service || :
fi
