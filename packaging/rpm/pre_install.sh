# The system user before the files land (sysusers.d when systemd has it).
if [ -x /usr/bin/systemd-sysusers ]; then
    echo 'g plinth - -
u plinth - "plinth provider agent" /var/lib/plinth /usr/sbin/nologin
g tss - -
m plinth tss' | systemd-sysusers --replace=/usr/lib/sysusers.d/plinth.conf - || :
else
    getent group plinth >/dev/null || groupadd -r plinth
    getent passwd plinth >/dev/null || useradd -r -g plinth -d /var/lib/plinth -s /sbin/nologin plinth
    getent group tss >/dev/null || groupadd -r tss
    usermod -a -G tss plinth || :
fi
