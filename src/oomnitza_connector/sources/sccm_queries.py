"""The SQL of ``[sccm]``: read-only queries over the documented ConfigMgr reporting views.

The text is written once in a portable subset that Microsoft SQL Server (2012+) and SQLite (3.25+,
the engine of the tests) both run unchanged: ``dbo.``-qualified names (SQLite: a database attached
as ``dbo``), ``LEFT OUTER JOIN`` with extra conditions, derived tables, ``ROW_NUMBER() OVER``,
``SUM``/``GROUP BY``, ``UNION``, ``IN`` lists, ``CASE``, plain ``AS`` aliases and ``?`` parameters.
Not used on purpose: ``TOP``, ``ISNULL``, ``[brackets]``, ``NOLOCK`` hints, string-literal aliases.
The few differences left (parameter marker, the catalogue probe) live in ``sccm.Dialect``.

One row per computer (``ResourceID``), where the reference produced one per disk × adapter × user:
- ``cpu``: the processor instance with the lowest ``GroupID``;
- ``hdd_total_mb``: the sum of the physical disks;
- ``ipv4_address``/``mac_address``: one configured adapter, preferring one with a default gateway;
- ``primary_user``: the newest active user device affinity (``v_UserMachineRelationship`` lists
  "users and their primary devices"; its columns are ``RelationActive``, ``CreationTime`` …, not
  the ``IsActive`` / ``Types[]`` of the SMS_UserMachineRelationship WMI class).

Views and columns: Microsoft's "SQL Server views in Configuration Manager" pages name the views
(learn.microsoft.com/intune/configmgr/develop/core/understand/sqlviews/…); hardware inventory
views are ``v_GS_<class>`` with ``<property>0`` columns. Their exact column lists (which Microsoft's
pages do not give) were checked against an Entity Framework scaffold of a real site database's
``fn_rbac_*`` functions, which mirror the views (github.com/Eph-It/MEM.CommunityCenter,
CommunityCenter.Models/RBAC/fn_rbac_<view>.cs).
"""

from __future__ import annotations

# Views that are missing when their inventory class is off (BitLocker, Endpoint Protection): the
# query then reports their columns as NULL (with a warning) instead of failing.
OPTIONAL_VIEWS = {
    "v_GS_ENCRYPTABLE_VOLUME": (
        "enc.ProtectionStatus0",
        "LEFT OUTER JOIN dbo.v_GS_ENCRYPTABLE_VOLUME enc ON enc.ResourceID = cs.ResourceID AND enc.DriveLetter0 = 'C:'",
    ),
    "v_GS_AntimalwareHealthStatus": (
        "av.AntivirusEnabled",
        "LEFT OUTER JOIN dbo.v_GS_AntimalwareHealthStatus av ON av.ResourceID = cs.ResourceID",
    ),
}
OPTIONAL_COLUMNS = {"v_GS_ENCRYPTABLE_VOLUME": "c_drive_encrypted", "v_GS_AntimalwareHealthStatus": "antivirus_enabled"}

HARDWARE_KEYS = (
    "resource_id",
    "computer_name",
    "domain_name",
    "make",
    "model",
    "platform",
    "user_name",
    "cpu",
    "hdd_total_mb",
    "ipv4_address",
    "mac_address",
    "memory_total_kb",
    "serial_number",
    "last_logon",
    "c_drive_encrypted",
    "antivirus_enabled",
    "primary_user",
    "os_version",
)

MAIN = """
SELECT
    cs.ResourceID AS resource_id,
    cs.Name0 AS computer_name,
    cs.Domain0 AS domain_name,
    cs.Manufacturer0 AS make,
    cs.Model0 AS model,
    cs.SystemType0 AS platform,
    cs.UserName0 AS user_name,
    cpu.Name0 AS cpu,
    dsk.Size0 AS hdd_total_mb,
    nic.IPAddress0 AS ipv4_address,
    nic.MACAddress0 AS mac_address,
    mem.TotalPhysicalMemory0 AS memory_total_kb,
    bios.SerialNumber0 AS serial_number,
    rs.Last_Logon_Timestamp0 AS last_logon,
    {encrypted} AS c_drive_encrypted,
    {antivirus} AS antivirus_enabled,
    umr.UniqueUserName AS primary_user,
    osys.Caption0 AS os_version
FROM dbo.v_GS_COMPUTER_SYSTEM cs
LEFT OUTER JOIN (
    SELECT ResourceID, Name0, ROW_NUMBER() OVER (PARTITION BY ResourceID ORDER BY GroupID) AS rn
    FROM dbo.v_GS_PROCESSOR
) cpu ON cpu.ResourceID = cs.ResourceID AND cpu.rn = 1
LEFT OUTER JOIN (
    SELECT ResourceID, SUM(Size0) AS Size0 FROM dbo.v_GS_DISK GROUP BY ResourceID
) dsk ON dsk.ResourceID = cs.ResourceID
LEFT OUTER JOIN (
    SELECT ResourceID, IPAddress0, MACAddress0,
           ROW_NUMBER() OVER (PARTITION BY ResourceID ORDER BY
               CASE WHEN DefaultIPGateway0 IS NULL OR DefaultIPGateway0 = '' THEN 1 ELSE 0 END, GroupID) AS rn
    FROM dbo.v_GS_NETWORK_ADAPTER_CONFIGURATION
    WHERE MACAddress0 IS NOT NULL AND IPAddress0 IS NOT NULL
) nic ON nic.ResourceID = cs.ResourceID AND nic.rn = 1
LEFT OUTER JOIN dbo.v_GS_X86_PC_MEMORY mem ON mem.ResourceID = cs.ResourceID
LEFT OUTER JOIN dbo.v_GS_PC_BIOS bios ON bios.ResourceID = cs.ResourceID
LEFT OUTER JOIN dbo.v_R_System rs ON rs.ResourceID = cs.ResourceID
{optional_joins}
LEFT OUTER JOIN (
    SELECT MachineResourceID, UniqueUserName,
           ROW_NUMBER() OVER (PARTITION BY MachineResourceID ORDER BY CreationTime DESC, UniqueUserName) AS rn
    FROM dbo.v_UserMachineRelationship
    WHERE RelationActive = 1
) umr ON umr.MachineResourceID = cs.ResourceID AND umr.rn = 1
LEFT OUTER JOIN dbo.v_GS_OPERATING_SYSTEM osys ON osys.ResourceID = cs.ResourceID
ORDER BY cs.ResourceID
"""

SOFTWARE = """
SELECT ResourceID AS resource_id, DisplayName0 AS name, Version0 AS version, Publisher0 AS publisher
FROM dbo.v_GS_ADD_REMOVE_PROGRAMS
WHERE ResourceID IN ({ids}) AND DisplayName0 IS NOT NULL AND DisplayName0 <> ''
UNION
SELECT ResourceID, DisplayName0, Version0, Publisher0
FROM dbo.v_GS_ADD_REMOVE_PROGRAMS_64
WHERE ResourceID IN ({ids}) AND DisplayName0 IS NOT NULL AND DisplayName0 <> ''
ORDER BY resource_id, name, version, publisher
"""


def main_query(present: set[str]) -> str:
    """The hardware query; optional views not in ``present`` (lower-case names) give NULL columns."""
    columns, joins = {}, []
    for view, (column, join) in OPTIONAL_VIEWS.items():
        if view.lower() in present:
            columns[view] = column
            joins.append(join)
        else:
            columns[view] = "NULL"
    return MAIN.format(
        encrypted=columns["v_GS_ENCRYPTABLE_VOLUME"],
        antivirus=columns["v_GS_AntimalwareHealthStatus"],
        optional_joins="\n".join(joins),
    )


def software_query(count: int) -> str:
    """Installed software of ``count`` computers (their ids bound twice, once per view)."""
    return SOFTWARE.format(ids=", ".join("?" * count))
