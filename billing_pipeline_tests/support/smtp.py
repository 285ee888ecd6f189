"""A small SMTP server for tests: a real TCP listener speaking the commands smtplib sends (no
STARTTLS, no AUTH), keeping each message it accepts."""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message


@dataclass
class Mailbox:
    host: str = "127.0.0.1"
    port: int = 0
    messages: list[tuple[str, list[str], Message]] = field(default_factory=list)


@contextmanager
def smtp_server() -> Iterator[Mailbox]:
    """Serve SMTP on a free port until the block ends; messages land in the `Mailbox`."""
    box = Mailbox()

    class Session(socketserver.StreamRequestHandler):
        def reply(self, line: str) -> None:
            self.wfile.write(f"{line}\r\n".encode())

        def handle(self) -> None:
            sender, recipients = "", []
            self.reply("220 test SMTP")
            while raw := self.rfile.readline():
                command = raw.decode().strip()
                verb = command.split(" ", 1)[0].upper()
                if verb in ("EHLO", "HELO"):
                    self.reply("250 test")
                elif verb == "MAIL":
                    sender = command.split(":", 1)[1].strip(" <>")
                elif verb == "RCPT":
                    recipients.append(command.split(":", 1)[1].strip(" <>"))
                elif verb == "DATA":
                    self.reply("354 end with .")
                    lines = []
                    while (line := self.rfile.readline()) not in (b".\r\n", b""):
                        lines.append(line[1:] if line.startswith(b"..") else line)
                    box.messages.append((sender, recipients, message_from_bytes(b"".join(lines))))
                elif verb == "QUIT":
                    self.reply("221 bye")
                    return
                if verb in ("MAIL", "RCPT", "DATA", "RSET", "NOOP"):
                    self.reply("250 ok")

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Session)
    server.daemon_threads = True
    box.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield box
    finally:
        server.shutdown()
        server.server_close()
