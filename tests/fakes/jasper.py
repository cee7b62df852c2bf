"""Fake Cisco IoT Control Center (Jasper) SOAP Terminal API.

What it follows, per behaviour (Jasper's schema is published with the service, at
``https://api.jasperwireless.com/ws/schema/Terminal.wsdl`` and ``JasperAPI.xsd``; public clients generated
from it: brightnucleus/jasper-client ``src/SoapTypes/TerminalClient/*.php``, and Cisco's C# sample
classes that integrators copy):

- schema: a small but valid WSDL (``/ws/schema/Terminal.wsdl``) importing an XSD
  (``/ws/schema/JasperAPI.xsd``) for the two operations the connector uses, SOAP 1.1
  document/literal at ``/ws/service/terminal``; the base ``RequestType`` (``messageId``,
  ``version``, ``licenseKey``) and ``TerminalType``'s elements in schema order, ``msisdn`` as an
  attribute, ``rating`` nested (as the generated clients declare them).
- auth: every request carries a WS-Security UsernameToken with ``PasswordText`` (OASIS WSS 1.0
  UsernameToken Profile) and the ``licenseKey``; anything wrong is a SOAP Fault with HTTP 500, as a
  SOAP 1.1 service answers faults.
- ``GetModifiedTerminals``: the ICCIDs modified strictly after ``since``, oldest first, paged with
  ``pageNumber``/``totalPages`` (newer schemas; GetModifiedTerminalsRequest/Response.php carry them;
  ``paged=False`` plays a schema without them).
- ``GetTerminalDetails``: unknown ICCIDs are left out and the rest answered in reverse order (the
  order is not documented: the harder case), at most ``max_details`` ICCIDs per call (50 is the
  limit integrators quote; unverified).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from xml.sax.saxutils import escape

from lxml import etree
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .vendor import FakeVendor

SCH = "http://api.jasperwireless.com/ws/schema"
SVC = "http://api.jasperwireless.com/ws/service/terminal"
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
PASSWORD_TEXT = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordText"

# TerminalType's children, in schema order, with their XSD types.
TERMINAL_FIELDS: list[tuple[str, str]] = [
    ("iccid", "xsd:string"),
    ("terminalId", "xsd:string"),
    ("modemId", "xsd:string"),
    ("customer", "xsd:string"),
    ("endConsumerId", "xsd:string"),
    ("suspended", "xsd:string"),
    ("ratePlan", "xsd:string"),
    ("status", "xsd:string"),
    ("monthToDateUsage", "xsd:decimal"),
    ("overageLimitReached", "xsd:boolean"),
    ("overageLimitOverride", "xsd:string"),
    ("dateActivated", "xsd:dateTime"),
    ("dateAdded", "xsd:dateTime"),
    ("dateModified", "xsd:dateTime"),
    ("dateShipped", "xsd:dateTime"),
    ("monthToDateDataUsage", "xsd:decimal"),
    ("monthToDateSMSUsage", "xsd:decimal"),
    ("monthToDateVoiceUsage", "xsd:decimal"),
    ("secureSimId", "xsd:string"),
    *[(f"custom{i}", "xsd:string") for i in range(1, 11)],
    ("rating", "sch:RatingType"),
    ("accountId", "xsd:long"),
    ("fixedIpAddress", "xsd:string"),
    ("ctdSessionCount", "xsd:long"),
    ("imsi", "xsd:string"),
    ("primaryICCID", "xsd:string"),
    ("imei", "xsd:string"),
    ("globalSimType", "xsd:string"),
    ("simNotes", "xsd:string"),
    ("version", "xsd:int"),
]
RATING_FIELDS = [
    "termStartDate",
    "termEndDate",
    "renewalPolicy",
    "renewalRatePlan",
    "totalPrimaryIncludedData",
    "primaryDataRemaining",
]

XSD = f"""<?xml version="1.0" encoding="UTF-8"?>
<xsd:schema xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:sch="{SCH}" targetNamespace="{SCH}"
            elementFormDefault="qualified">
  <xsd:complexType name="RequestType">
    <xsd:sequence>
      <xsd:element name="messageId" type="xsd:string"/>
      <xsd:element name="version" type="xsd:string"/>
      <xsd:element name="licenseKey" type="xsd:string"/>
    </xsd:sequence>
  </xsd:complexType>
  <xsd:complexType name="ResponseType">
    <xsd:sequence>
      <xsd:element name="correlationId" type="xsd:string"/>
      <xsd:element name="version" type="xsd:string"/>
      <xsd:element name="build" type="xsd:string"/>
      <xsd:element name="timestamp" type="xsd:dateTime"/>
    </xsd:sequence>
  </xsd:complexType>
  <xsd:complexType name="RatingType">
    <xsd:sequence>
{"".join(f'      <xsd:element name="{n}" type="xsd:string" minOccurs="0"/>{chr(10)}' for n in RATING_FIELDS)}\
    </xsd:sequence>
  </xsd:complexType>
  <xsd:complexType name="TerminalType">
    <xsd:sequence>
{"".join(f'      <xsd:element name="{n}" type="{t}" minOccurs="0"/>{chr(10)}' for n, t in TERMINAL_FIELDS)}\
    </xsd:sequence>
    <xsd:attribute name="msisdn" type="xsd:string"/>
  </xsd:complexType>
  <xsd:element name="GetModifiedTerminalsRequest">
    <xsd:complexType>
      <xsd:complexContent>
        <xsd:extension base="sch:RequestType">
          <xsd:sequence>
            <xsd:element name="since" type="xsd:dateTime" minOccurs="0"/>
            <xsd:element name="simState" type="xsd:string" minOccurs="0"/>
            <xsd:element name="pageNumber" type="xsd:int" minOccurs="0"/>
          </xsd:sequence>
        </xsd:extension>
      </xsd:complexContent>
    </xsd:complexType>
  </xsd:element>
  <xsd:element name="GetModifiedTerminalsResponse">
    <xsd:complexType>
      <xsd:complexContent>
        <xsd:extension base="sch:ResponseType">
          <xsd:sequence>
            <xsd:element name="iccids">
              <xsd:complexType>
                <xsd:sequence>
                  <xsd:element name="iccid" type="xsd:string" minOccurs="0" maxOccurs="unbounded"/>
                </xsd:sequence>
              </xsd:complexType>
            </xsd:element>
            <xsd:element name="totalPages" type="xsd:int" minOccurs="0"/>
          </xsd:sequence>
        </xsd:extension>
      </xsd:complexContent>
    </xsd:complexType>
  </xsd:element>
  <xsd:element name="GetTerminalDetailsRequest">
    <xsd:complexType>
      <xsd:complexContent>
        <xsd:extension base="sch:RequestType">
          <xsd:sequence>
            <xsd:element name="iccids">
              <xsd:complexType>
                <xsd:sequence>
                  <xsd:element name="iccid" type="xsd:string" maxOccurs="unbounded"/>
                </xsd:sequence>
              </xsd:complexType>
            </xsd:element>
          </xsd:sequence>
        </xsd:extension>
      </xsd:complexContent>
    </xsd:complexType>
  </xsd:element>
  <xsd:element name="GetTerminalDetailsResponse">
    <xsd:complexType>
      <xsd:complexContent>
        <xsd:extension base="sch:ResponseType">
          <xsd:sequence>
            <xsd:element name="terminals">
              <xsd:complexType>
                <xsd:sequence>
                  <xsd:element name="terminal" type="sch:TerminalType" minOccurs="0" maxOccurs="unbounded"/>
                </xsd:sequence>
              </xsd:complexType>
            </xsd:element>
          </xsd:sequence>
        </xsd:extension>
      </xsd:complexContent>
    </xsd:complexType>
  </xsd:element>
</xsd:schema>
"""

OPERATIONS = ("GetModifiedTerminals", "GetTerminalDetails")


def wsdl(base: str) -> str:
    messages = "".join(
        f'  <wsdl:message name="{op}{kind}"><wsdl:part name="body" element="sch:{op}{kind}"/></wsdl:message>\n'
        for op in OPERATIONS
        for kind in ("Request", "Response")
    )
    port_ops = "".join(
        f'    <wsdl:operation name="{op}"><wsdl:input message="tns:{op}Request"/>'
        f'<wsdl:output message="tns:{op}Response"/></wsdl:operation>\n'
        for op in OPERATIONS
    )
    binding_ops = "".join(
        f'    <wsdl:operation name="{op}"><soap:operation soapAction="{SVC}/{op}"/>'
        f'<wsdl:input><soap:body use="literal"/></wsdl:input><wsdl:output><soap:body use="literal"/></wsdl:output>'
        f"</wsdl:operation>\n"
        for op in OPERATIONS
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<wsdl:definitions xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/" xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/"
    xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:sch="{SCH}" xmlns:tns="{SVC}" targetNamespace="{SVC}">
  <wsdl:types>
    <xsd:schema targetNamespace="{SVC}/types">
      <xsd:import namespace="{SCH}" schemaLocation="{base}/ws/schema/JasperAPI.xsd"/>
    </xsd:schema>
  </wsdl:types>
{messages}  <wsdl:portType name="Terminal">
{port_ops}  </wsdl:portType>
  <wsdl:binding name="TerminalBinding" type="tns:Terminal">
    <soap:binding style="document" transport="http://schemas.xmlsoap.org/soap/http"/>
{binding_ops}  </wsdl:binding>
  <wsdl:service name="TerminalService">
    <wsdl:port name="TerminalPort" binding="tns:TerminalBinding">
      <soap:address location="{base}/ws/service/terminal"/>
    </wsdl:port>
  </wsdl:service>
</wsdl:definitions>
"""


def terminal(i: int, modified: str, **extra: Any) -> dict[str, Any]:
    """One SIM; ``modified`` like ``2026-11-02T14:22:31.000Z``."""
    iccid = f"890117042789300{i:05d}"
    return {
        "msisdn": f"88235{i:010d}",
        "iccid": iccid,
        "terminalId": f"TRUCK-{i:04d}",
        "modemId": f"MDM-{i}",
        "customer": "Fleet East",
        "suspended": "N",
        "ratePlan": "IOT-1GB-POOL",
        "status": "ACTIVATED",
        "monthToDateUsage": "12.50",
        "overageLimitReached": "false",
        "overageLimitOverride": "DEFAULT",
        "dateActivated": "2025-02-03T09:15:00.000Z",
        "dateAdded": "2025-01-20T00:00:00.000Z",
        "dateModified": modified,
        "monthToDateDataUsage": "12.50",
        "monthToDateSMSUsage": "3",
        "monthToDateVoiceUsage": "0",
        "secureSimId": "",
        "custom1": f"Depot {i}",
        "accountId": "100045",
        "fixedIpAddress": f"10.200.1.{i}",
        "imsi": f"31017{i:010d}",
        "imei": f"3569380356{i:05d}",
        "version": "7",
        **extra,
    }


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.strip().replace("Z", "+00:00"))


def soap_fault(code: str, string: str, detail: str = "") -> Response:
    body = (
        f'<SOAP-ENV:Envelope xmlns:SOAP-ENV="{SOAP_ENV}"><SOAP-ENV:Body><SOAP-ENV:Fault>'
        f"<faultcode>SOAP-ENV:{code}</faultcode><faultstring>{escape(string)}</faultstring>"
        + (f"<detail><error>{escape(detail)}</error></detail>" if detail else "")
        + "</SOAP-ENV:Fault></SOAP-ENV:Body></SOAP-ENV:Envelope>"
    )
    return Response(body, status_code=500, media_type="text/xml; charset=utf-8")


class FakeJasper(FakeVendor):
    def __init__(
        self,
        *,
        username: str = "api-user@example.com",
        password: str = "s3cret",
        license_key: str = "LIC-0000-FAKE",
        page_size: int = 10,
        max_details: int = 50,
        paged: bool = True,
    ) -> None:
        self.username, self.password, self.license_key = username, password, license_key
        self.page_size, self.max_details, self.paged = page_size, max_details, paged
        self.terminals: list[dict[str, Any]] = []
        self.seen_since: list[str] = []
        self.detail_batches: list[list[str]] = []
        super().__init__()

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/ws/schema/Terminal.wsdl", self.get_wsdl),
            Route("/ws/schema/JasperAPI.xsd", self.get_xsd),
            Route("/ws/service/terminal", self.soap, methods=["POST"]),
        ]

    async def get_wsdl(self, request: Request) -> Response:
        return Response(wsdl(self.url), media_type="text/xml")

    async def get_xsd(self, request: Request) -> Response:
        return Response(XSD, media_type="text/xml")

    async def soap(self, request: Request) -> Response:
        try:
            envelope = etree.fromstring(await request.body())
        except etree.XMLSyntaxError:
            return soap_fault("Client", "Malformed request")
        ns = {"s": SOAP_ENV, "w": WSSE, "j": SCH}
        user = envelope.findtext("s:Header/w:Security/w:UsernameToken/w:Username", namespaces=ns)
        password = envelope.find("s:Header/w:Security/w:UsernameToken/w:Password", namespaces=ns)
        if (
            user != self.username
            or password is None
            or password.text != self.password
            or password.get("Type") != PASSWORD_TEXT
        ):
            return soap_fault("Client", "200200", "Invalid username or password (fictional text)")
        body = envelope.find("s:Body", namespaces=ns)
        if body is None or len(body) == 0:
            return soap_fault("Client", "Malformed request")
        payload = body[0]
        if payload.findtext("j:licenseKey", namespaces=ns) != self.license_key:
            return soap_fault("Client", "100200", "Invalid license key (fictional text)")
        operation = etree.QName(payload).localname.removesuffix("Request")
        action = request.headers.get("soapaction", "").strip('"')
        if operation not in OPERATIONS or action != f"{SVC}/{operation}":
            return soap_fault("Client", f"Unknown operation {operation} (SOAPAction {action})")
        correlation = payload.findtext("j:messageId", default="", namespaces=ns)
        if operation == "GetModifiedTerminals":
            return self._modified(payload, ns, correlation)
        return self._details(payload, ns, correlation)

    def _envelope(self, operation: str, correlation: str, inner: str) -> Response:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        body = (
            f'<SOAP-ENV:Envelope xmlns:SOAP-ENV="{SOAP_ENV}"><SOAP-ENV:Body>'
            f'<ns2:{operation}Response xmlns:ns2="{SCH}">'
            f"<ns2:correlationId>{escape(correlation)}</ns2:correlationId><ns2:version>1.0</ns2:version>"
            f"<ns2:build>fake-build</ns2:build><ns2:timestamp>{now}</ns2:timestamp>{inner}"
            f"</ns2:{operation}Response></SOAP-ENV:Body></SOAP-ENV:Envelope>"
        )
        return Response(body, media_type="text/xml; charset=utf-8")

    def _modified(self, payload: Any, ns: dict[str, str], correlation: str) -> Response:
        since_text = payload.findtext("j:since", default="", namespaces=ns)
        self.seen_since.append(since_text)
        since = _parse_time(since_text) if since_text else datetime(1970, 1, 1, tzinfo=UTC)
        changed = sorted(
            (t for t in self.terminals if _parse_time(t["dateModified"]) > since),
            key=lambda t: _parse_time(t["dateModified"]),
        )
        iccids = [t["iccid"] for t in changed]
        total_pages = max(1, -(-len(iccids) // self.page_size))
        page = int(payload.findtext("j:pageNumber", default="1", namespaces=ns) or 1)
        chosen = iccids[(page - 1) * self.page_size : page * self.page_size]
        inner = "<ns2:iccids>" + "".join(f"<ns2:iccid>{i}</ns2:iccid>" for i in chosen) + "</ns2:iccids>"
        if self.paged:
            inner += f"<ns2:totalPages>{total_pages}</ns2:totalPages>"
        return self._envelope("GetModifiedTerminals", correlation, inner)

    def _details(self, payload: Any, ns: dict[str, str], correlation: str) -> Response:
        wanted = [e.text for e in payload.findall("j:iccids/j:iccid", namespaces=ns)]
        self.detail_batches.append(wanted)
        if len(wanted) > self.max_details:
            return soap_fault("Client", "400300", f"Too many ICCIDs (max {self.max_details})")
        by_iccid = {t["iccid"]: t for t in self.terminals}
        parts = []
        for iccid in reversed(wanted):  # any order; unknown ICCIDs are simply absent
            t = by_iccid.get(iccid)
            if t is None:
                continue
            children = []
            for name, _ in TERMINAL_FIELDS:
                if name == "rating" and isinstance(t.get("rating"), dict):
                    inner = "".join(f"<ns2:{k}>{escape(str(v))}</ns2:{k}>" for k, v in t["rating"].items())
                    children.append(f"<ns2:rating>{inner}</ns2:rating>")
                elif name in t and name != "rating":
                    children.append(f"<ns2:{name}>{escape(str(t[name]))}</ns2:{name}>")
            parts.append(f'<ns2:terminal msisdn="{t["msisdn"]}">{"".join(children)}</ns2:terminal>')
        return self._envelope("GetTerminalDetails", correlation, f"<ns2:terminals>{''.join(parts)}</ns2:terminals>")
