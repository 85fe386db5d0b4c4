"""Private Postfix and Dovecot instances on loopback high ports, for the email adapter's tests.

Postfix (port `smtp_port`) relays mail for `confide.test` to Confide's SMTP server on `confide_port`
(opportunistic STARTTLS, as a real MX would) and delivers `example.test` and `imap.test` into Dovecot
over LMTP; every address there is a mailbox. Dovecot serves them over plain IMAP on `imap_port`, over
implicit-TLS IMAP on `imaps_port`, and checks the relay's SMTP AUTH (Postfix asks Dovecot's auth service).
Postfix's STARTTLS and Dovecot's IMAPS use one self-signed certificate for 127.0.0.1 (`cert`), so Confide's
replies go out over verified TLS with AUTH, and Confide can read its mailbox over verified TLS.
Everything lives under one folder (in /dev/shm when it exists) and is removed by `stop()`. Postfix runs as
root (scripts/services/mail.sh installs both servers).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

PEOPLE_DOMAIN = "example.test"  # persons' own mailboxes
CONFIDE_DOMAIN = "confide.test"  # SMTP mode: Postfix relays this domain to Confide
IMAP_DOMAIN = "imap.test"  # IMAP mode: Confide's mailbox lives in Dovecot
PASSWORD = "secret-pw"

MASTER_CF = """\
{smtp_listen} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {root}/postfix/queue
data_directory = {root}/postfix/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = mx.test
mydomain = test
myorigin = mx.test
mydestination =
mynetworks = 127.0.0.0/8
local_header_rewrite_clients =
alias_maps =
alias_database =
biff = no
# no DNS anywhere: every next hop is a literal address
disable_dns_lookups = yes
smtp_dns_support_level = disabled
smtp_host_lookup = native
lmtp_host_lookup = native
maillog_file = {root}/postfix/maillog
maillog_file_prefixes = {root}
relay_domains = {confide_domain}
transport_maps = texthash:{root}/postfix/transport
virtual_mailbox_domains = {people_domain} {imap_domain}
virtual_mailbox_maps = static:ok
virtual_transport = lmtp:inet:127.0.0.1:{lmtp_port}
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject
smtpd_tls_security_level = may
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_sasl_type = dovecot
smtpd_sasl_path = inet:127.0.0.1:{auth_port}
smtpd_sasl_auth_enable = yes
smtpd_tls_auth_only = yes
smtp_tls_security_level = may
smtp_tls_loglevel = 1
message_size_limit = 104857600
minimal_backoff_time = 1s
maximal_backoff_time = 2s
queue_run_delay = 1s
"""

DOVECOT_CONF = """\
protocols = imap lmtp
listen = 127.0.0.1
base_dir = {root}/dovecot/run
state_dir = {root}/dovecot/state
instance_name = confide-test-{port}
log_path = {root}/dovecot/dovecot.log
# TLS for the imaps listener (implicit TLS); the plain listener still takes plaintext logins for the tests.
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:~/Maildir
default_internal_user = dovecot
default_login_user = dovenull
# Every address of the test domains is a mailbox with the same password, so each test takes fresh ones.
passdb {{
  driver = static
  args = password={password}
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/dovecot/home/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps_port}
    ssl = yes
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp_port}
  }}
}}
service auth {{
  inet_listener {{
    address = 127.0.0.1
    port = {auth_port}
  }}
}}
protocol lmtp {{
  postmaster_address = postmaster@{people_domain}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def self_signed_cert(folder: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A certificate for `host` (IP and DNS name in its SAN), made with the openssl command."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    san = f"subjectAltName=IP:{host},DNS:localhost" if host[0].isdigit() else f"subjectAltName=DNS:{host}"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={host}",
         "-addext", san, "-addext", "basicConstraints=critical,CA:TRUE", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@dataclass
class DkimKey:
    """An RSA key for DKIM signing and the DNS TXT record that publishes it."""

    private_pem: bytes
    txt_record: bytes

    @classmethod
    def generate(cls, folder: Path) -> DkimKey:
        key = folder / "dkim.pem"
        # dkimpy reads PKCS#1 ("RSA PRIVATE KEY"), which OpenSSL 3 writes only with -traditional.
        subprocess.run(["openssl", "genrsa", "-traditional", "-out", str(key), "1024"], check=True, capture_output=True)
        public = subprocess.run(
            ["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "DER"], check=True, capture_output=True
        ).stdout
        return cls(key.read_bytes(), b"v=DKIM1; k=rsa; p=" + base64.b64encode(public))


@dataclass
class MailServers:
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="confide-mail-", dir=_tmp_root())))
    smtp_port: int = field(default_factory=free_port)
    imap_port: int = field(default_factory=free_port)
    imaps_port: int = field(default_factory=free_port)  # IMAP over implicit TLS
    lmtp_port: int = field(default_factory=free_port)
    auth_port: int = field(default_factory=free_port)
    confide_port: int = field(default_factory=free_port)  # where Postfix relays confide.test
    _dovecot: asyncio.subprocess.Process | None = None

    @property
    def cert(self) -> Path:
        return self.root / "cert.pem"

    @property
    def key(self) -> Path:
        return self.root / "key.pem"

    async def start(self) -> MailServers:
        self.root.chmod(0o755)  # Dovecot's auth and Postfix's daemons run as their own users
        try:
            with shared_files():  # the suite's umask (077, as Confide's) would keep those users out of their files
                self_signed_cert(self.root)
                await self._start_dovecot()
                self._write_postfix()
            await asyncio.to_thread(self._postfix, "start")
            await _wait_for_port(self.smtp_port)
        except BaseException:
            await self.stop()  # leave no Dovecot or Postfix behind
            raise
        return self

    async def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            await asyncio.to_thread(self._postfix, "stop")
        if self._dovecot is not None and self._dovecot.returncode is None:
            self._dovecot.terminate()
            await self._dovecot.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    async def retry_queued(self) -> None:
        """Have Postfix retry everything it holds now: a restarted queue manager takes up a mail stranded in its
        active queue, and a flush retries the deferred ones."""
        await asyncio.to_thread(self._postfix, "reload")
        await asyncio.to_thread(self._postfix, "flush")

    def maildir(self, address: str) -> Path:
        return self.root / "dovecot" / "home" / address / "Maildir"

    def log(self) -> str:
        """Postfix's and Dovecot's logs, for assertion messages."""
        parts = [self.root / "postfix" / "maillog", self.root / "dovecot" / "dovecot.log"]
        return "\n".join(p.read_text(errors="replace") for p in parts if p.exists())

    async def _start_dovecot(self) -> None:
        base = self.root / "dovecot"
        for sub in ("run", "state", "home"):
            (base / sub).mkdir(parents=True)
        nobody = pwd.getpwnam("nobody")
        (base / "home").chmod(0o1777)  # Dovecot creates each home as the mail user
        conf = base / "dovecot.conf"
        conf.write_text(
            DOVECOT_CONF.format(root=self.root, port=self.imap_port, imaps_port=self.imaps_port,
                                lmtp_port=self.lmtp_port, auth_port=self.auth_port, password=PASSWORD,
                                uid=nobody.pw_uid, gid=nobody.pw_gid, people_domain=PEOPLE_DOMAIN, cert=self.cert,
                                key=self.key)
        )  # fmt: skip
        self._dovecot = await asyncio.create_subprocess_exec(
            "dovecot", "-F", "-c", str(conf), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            umask=SHARED_UMASK,
        )  # fmt: skip
        for port in (self.imap_port, self.imaps_port, self.lmtp_port, self.auth_port):
            await _wait_for_port(port, self._dovecot)

    def _write_postfix(self) -> None:
        base = self.root / "postfix"
        for sub in ("queue", "data"):
            (base / sub).mkdir(parents=True)
        postfix = pwd.getpwnam("postfix")
        os.chown(base / "data", postfix.pw_uid, postfix.pw_gid)
        (base / "transport").write_text(f"{CONFIDE_DOMAIN} smtp:[127.0.0.1]:{self.confide_port}\n")
        (base / "main.cf").write_text(
            MAIN_CF.format(root=self.root, confide_domain=CONFIDE_DOMAIN, people_domain=PEOPLE_DOMAIN,
                           imap_domain=IMAP_DOMAIN, lmtp_port=self.lmtp_port, auth_port=self.auth_port,
                           cert=self.cert, key=self.key)
        )  # fmt: skip
        (base / "master.cf").write_text(MASTER_CF.format(smtp_listen=f"127.0.0.1:{self.smtp_port}"))

    def _postfix(self, action: str) -> None:
        done = subprocess.run(
            ["postfix", "-c", str(self.root / "postfix"), action], capture_output=True, text=True, umask=SHARED_UMASK
        )
        if done.returncode != 0:
            raise subprocess.CalledProcessError(done.returncode, done.args, done.stdout, done.stderr + self.log())


SHARED_UMASK = 0o022


@contextlib.contextmanager
def shared_files() -> Iterator[None]:
    """Files the mail servers' own users (postfix, dovecot, nobody) must read, made under the usual umask."""
    previous = os.umask(SHARED_UMASK)
    try:
        yield
    finally:
        os.umask(previous)


def _tmp_root() -> str | None:
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


async def _wait_for_port(port: int, process: asyncio.subprocess.Process | None = None, within_s: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if process is not None and process.returncode is not None:
                raise RuntimeError(f"server exited with {process.returncode} before listening on {port}") from None
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {within_s}s") from None
            await asyncio.sleep(0.05)
        else:
            writer.close()
            await writer.wait_closed()
            return
