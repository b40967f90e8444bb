from twisted.application.service import ServiceMaker

ccserver = ServiceMaker(
    "ccserver",
    "ccserver.tap",
    "CC-Server (Curious Containers): run containerised applications on Docker engines",
    "ccserver",
)
