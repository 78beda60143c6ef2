"""Deterministic stand-ins for the systems the after-sale handlers would ask in production.

The engine holds the case, not the utility's master data. Where a handler needs data from another
system, it asks this module, which **simulates** the answer deterministically from the case data: every
value is derived from a SHA-256 seed of the 户号 (``customerNo``), or of the fault address / work order
number when there is no 户号, plus the engine clock. The same case on the same simulated clock always
gets the same answer, on every worker, so a demo or a test is reproducible and a retried handler sees
the same data. Nothing here touches the network.

Integration points (replace the functions, keep the shapes):

===========================  ===========================  ================================================
function                     production system            used by
===========================  ===========================  ================================================
:func:`account`              营销业务系统 (SG186) 客户档案   prepareRevisit, verifyPayment, checkPreconditions,
                                                          updateAccountContract, computeBackBilling
:func:`bills`                营销系统 电费账务 / 交费记录    fetchBilling, checkArrears, verifyPayment,
                                                          informArrearsCut, matchOutage
:func:`known_outage`         供电服务指挥系统 停电信息        matchOutage
:func:`remote_meter_online`  用电信息采集系统 费控指令        remoteReconnect
===========================  ===========================  ================================================

Simulated shares (documented so that a reader can predict a demo): 80 % of accounts are residential;
70 % have a remote-controllable meter (S29 code ``28``), of which 85 % answer a remote command; 8 % are
cut off for arrears (two or three unpaid bills), another 20 % have one unpaid bill without a cut-off; 3 %
of accounts are cancelled (销户); 12 % of fault reports match a known outage. Tariffs are simulated
account data (flat price per kWh), not policy: the policy file holds only the rules.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from engine.sla import SHANGHAI

CENT = Decimal("0.01")
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = ["伟", "芳", "娜", "秀英", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明", "超"]
COMPANIES = ["湘江食品", "麓谷电子", "星城商贸", "岳麓印务", "芙蓉酒店", "天心物流", "开福建材", "雨花机械"]
DISTRICTS = ["岳麓区", "芙蓉区", "天心区", "开福区", "雨花区", "望城区"]
ROADS = ["桐梓坡路", "麓山南路", "五一大道", "芙蓉中路", "劳动西路", "韶山北路", "潇湘中路"]
PAYMENT_CHANNELS = ["0104", "0208", "0209", "0101"]  # S29 payChan: 网上国网, 支付宝, 微信, 网点
REMOTE_METER = "28"  # S29: 智能远程费控电能表
LOCAL_METER = "01"   # simulated: a meter without remote control


def money(value: Decimal | float | int) -> Decimal:
    """Round to ¥0.01 (half up)."""
    return Decimal(str(value)).quantize(CENT, rounding=ROUND_HALF_UP)


def _rng(*parts: object) -> random.Random:
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode("utf-8")).hexdigest()
    return random.Random(int(digest[:16], 16))


def seed_number(*parts: object, digits: int = 8) -> str:
    """A deterministic number of ``digits`` digits from the parts (order numbers, receipt numbers)."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode("utf-8")).hexdigest()
    return str(int(digest[:15], 16) % 10**digits).zfill(digits)


@dataclass(frozen=True)
class Account:
    """A customer's master data as the marketing system would return it (simulated)."""

    customer_no: str
    customer_name: str
    contact_phone: str
    elec_address: str
    category: str           # RES (居民) or OTHER (非居民), picks the penalty rate
    tariff: Decimal         # ¥ per kWh (flat, simulated)
    meter_type: str         # S29 meter type code; "28" = remote-controllable
    contract_kw: int
    status: str             # ACTIVE or CANCELLED (销户)
    arrears_cut: bool       # supply currently cut for arrears
    unpaid_bills: int       # how many of the latest bills are unpaid
    last_reading: Decimal   # last meter reading on file (kWh)
    excess_kw: int          # capacity found over the contract in an inspection (simulated)
    price_gap: Decimal      # ¥/kWh between the correct and the applied tariff (高价低接, simulated)

    @property
    def residential(self) -> bool:
        return self.category == "RES"


def account(customer_no: str) -> Account:
    """The account of a 户号 (simulated from the number; every 10-digit number exists)."""
    rng = _rng("account", customer_no)
    residential = rng.random() < 0.8
    name = rng.choice(SURNAMES) + rng.choice(GIVEN) if residential else f"长沙{rng.choice(COMPANIES)}有限公司"
    phone = "1" + rng.choice("3456789") + "".join(rng.choice("0123456789") for _ in range(9))
    address = f"长沙市{rng.choice(DISTRICTS)}{rng.choice(ROADS)}{rng.randint(1, 399)}号"
    tariff = Decimal("0.588") if residential else Decimal(rng.choice(["0.6416", "0.6934", "0.7125"]))
    meter_type = REMOTE_METER if rng.random() < 0.7 else LOCAL_METER
    draw = rng.random()
    arrears_cut = draw < 0.08
    unpaid = rng.choice([2, 3]) if arrears_cut else (1 if draw < 0.28 else 0)
    return Account(
        customer_no=customer_no, customer_name=name, contact_phone=phone, elec_address=address,
        category="RES" if residential else "OTHER", tariff=tariff, meter_type=meter_type,
        contract_kw=8 if residential else rng.choice([50, 80, 100, 160, 315]),
        status="CANCELLED" if rng.random() < 0.03 else "ACTIVE", arrears_cut=arrears_cut, unpaid_bills=unpaid,
        last_reading=Decimal(rng.randint(1000, 60000)) / 10, excess_kw=rng.randint(2, 60),
        price_gap=Decimal(rng.choice(["0.1050", "0.1534", "0.2210"])),
    )


@dataclass(frozen=True)
class Bill:
    period: str          # YYYY-MM
    kwh: int
    amount: Decimal      # ¥
    paid: bool
    arrears: Decimal     # unpaid part of the bill
    due_date: datetime   # 交费截止 (the 15th of the following month, end of day)
    paid_at: datetime | None
    channel: str | None


def _month_back(local: datetime, months: int) -> tuple[int, int]:
    index = local.year * 12 + (local.month - 1) - months
    return index // 12, index % 12 + 1


def bills(customer_no: str, now: datetime, months: int) -> list[Bill]:
    """The last ``months`` monthly bills, newest first, relative to ``now`` (simulated from the 户号)."""
    acct = account(customer_no)
    local = now.astimezone(SHANGHAI)
    result = []
    for back in range(1, months + 1):
        year, month = _month_back(local, back)
        rng = _rng("bill", customer_no, year, month)
        kwh = rng.randint(150, 450) if acct.residential else rng.randint(2000, 9000)
        amount = money(kwh * acct.tariff)
        due_year, due_month = (year + (month // 12), month % 12 + 1)
        due = datetime(due_year, due_month, 15, 23, 59, 59, tzinfo=SHANGHAI)
        paid = back > acct.unpaid_bills
        paid_at = None
        if paid:
            paid_at = datetime(due_year, due_month, rng.randint(3, 14), rng.randint(8, 21), rng.randint(0, 59),
                               tzinfo=SHANGHAI)
        result.append(Bill(f"{year:04d}-{month:02d}", kwh, amount, paid, Decimal(0) if paid else amount, due,
                           paid_at, rng.choice(PAYMENT_CHANNELS) if paid else None))
    return result


def penalty(bill: Bill, now: datetime, rates: dict[str, Decimal], category: str) -> Decimal:
    """违约金 of one unpaid bill: arrears × daily rate × days overdue (cross-year arrears of non-residential
    customers at the cross-year rate). ``rates`` maps RES / OTHER / OTHER_CROSSYEAR to a daily rate."""
    if bill.paid or now <= bill.due_date:
        return Decimal(0)
    days = (now.astimezone(SHANGHAI).date() - bill.due_date.date()).days
    if category == "RES":
        rate = rates["RES"]
    elif int(bill.period[:4]) < now.astimezone(SHANGHAI).year:
        rate = rates["OTHER_CROSSYEAR"]
    else:
        rate = rates["OTHER"]
    return money(bill.arrears * rate * days)


def last_payment_at(customer_no: str, now: datetime) -> datetime:
    """When the customer last paid (an account without arrears): minutes to hours before now (simulated)."""
    return now - timedelta(minutes=_rng("payment", customer_no, now.date()).randint(20, 300))


@dataclass(frozen=True)
class Outage:
    kind: str                 # PLANNED (计划停电) or FAULT (故障停电)
    area: str
    started_at: datetime
    restore_at: datetime      # estimated


def known_outage(key: str, now: datetime) -> Outage | None:
    """A planned or fault outage covering the reported place (``key``: 户号 or fault address), or None."""
    rng = _rng("outage", key, now.astimezone(SHANGHAI).date())
    if rng.random() >= 0.12:
        return None
    kind = "PLANNED" if rng.random() < 0.5 else "FAULT"
    started = now - timedelta(minutes=rng.randint(10, 120))
    restore = now + timedelta(minutes=10 * rng.randint(6, 24))
    restore = restore.replace(minute=restore.minute - restore.minute % 10, second=0, microsecond=0)
    area = f"{rng.choice(DISTRICTS)}{rng.choice(ROADS)}一带"
    return Outage(kind, area, started, restore)


def remote_meter_online(customer_no: str) -> bool:
    """Whether the meter answers a remote command (the 采集系统 sees it online); 85 % do."""
    return _rng("remote", customer_no).random() < 0.85
