//! Languages: every visible string comes from this catalogue (English and Simplified Chinese).
//!
//! Pages look strings up by key through [`t`] (the page's language is in the render context) or
//! [`tr`] (explicit language). A key missing from the catalogue renders as the key itself, and a
//! unit test scans the sources so that cannot ship.

use std::collections::HashMap;
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Lang {
    #[default]
    En,
    ZhCn,
}

impl Lang {
    pub const ALL: [Lang; 2] = [Lang::En, Lang::ZhCn];

    /// BCP 47 tag, as used in `<html lang>`, the cookie and the switch links.
    pub fn tag(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::ZhCn => "zh-CN",
        }
    }

    /// The language's own name, shown in the switch.
    pub fn native_name(self) -> &'static str {
        match self {
            Lang::En => "English",
            Lang::ZhCn => "简体中文",
        }
    }

    pub fn from_tag(tag: &str) -> Option<Lang> {
        let t = tag.trim().to_ascii_lowercase();
        if t == "en" || t.starts_with("en-") {
            Some(Lang::En)
        } else if t == "zh" || t.starts_with("zh-") {
            // Traditional-script tags still get the Chinese catalogue: closer than English.
            Some(Lang::ZhCn)
        } else {
            None
        }
    }

    /// Pick the best supported language from an `Accept-Language` header (RFC 9110 §12.5.4):
    /// highest q first, ties in header order; English when nothing matches.
    pub fn negotiate(accept_language: &str) -> Lang {
        let mut best: Option<(u32, Lang)> = None;
        for part in accept_language.split(',') {
            let mut it = part.split(';');
            let tag = it.next().unwrap_or("").trim();
            let q = it
                .find_map(|p| p.trim().strip_prefix("q="))
                .and_then(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            if q.is_nan() || q <= 0.0 {
                continue;
            }
            let q = (q.min(1.0) * 1000.0) as u32;
            if let Some(lang) = Lang::from_tag(tag)
                && best.is_none_or(|(bq, _)| q > bq)
            {
                best = Some((q, lang));
            }
        }
        best.map(|(_, l)| l).unwrap_or_default()
    }
}

/// (key, English, Chinese).
const CATALOGUE: &[(&str, &str, &str)] = &[
    // shell
    ("app.name", "Trellis", "Trellis 链上协作"),
    ("nav.main", "Main navigation", "主导航"),
    ("nav.explorer", "Explorer", "区块浏览器"),
    ("nav.traceability", "Traceability", "溯源"),
    ("nav.invoice", "E-invoice", "电子发票"),
    ("nav.procurement", "Procurement", "招投标"),
    ("nav.admin", "Administration", "管理"),
    ("nav.soon", "coming soon", "即将推出"),
    ("nav.language", "Language", "语言"),
    ("nav.skip", "Skip to content", "跳到正文"),
    ("auth.sign_in", "Sign in", "登录"),
    ("auth.sign_out", "Sign out", "退出"),
    ("auth.signed_in_as", "Signed in as", "当前用户"),
    ("auth.username", "Username", "用户名"),
    ("auth.password", "Password", "密码"),
    ("auth.title", "Sign in to Trellis", "登录 Trellis"),
    (
        "auth.intro",
        "Use the account your organisation's administrator gave you.",
        "请使用贵单位管理员为您开通的账号。",
    ),
    (
        "auth.bad_credentials",
        "Wrong username or password.",
        "用户名或密码错误。",
    ),
    ("auth.required", "Required.", "必填。"),
    (
        "auth.rate_limited",
        "Too many sign-in attempts. Wait a minute and try again.",
        "登录尝试次数过多，请一分钟后再试。",
    ),
    (
        "auth.disabled",
        "This account is disabled.",
        "该账号已停用。",
    ),
    (
        "auth.need_sign_in",
        "Please sign in to continue.",
        "请先登录。",
    ),
    (
        "auth.forbidden",
        "Your roles do not allow this.",
        "您的角色无权执行此操作。",
    ),
    (
        "auth.csrf",
        "The form expired. Reload the page and submit again.",
        "表单已过期，请刷新页面后重新提交。",
    ),
    // states
    ("state.empty", "Nothing here yet.", "暂无数据。"),
    ("state.loading", "Loading…", "加载中…"),
    ("state.error", "Something went wrong.", "出错了。"),
    ("state.not_found", "Not found.", "未找到。"),
    (
        "state.not_found_detail",
        "There is no page at this address.",
        "此地址没有对应的页面。",
    ),
    ("state.back_home", "Back to the start page", "返回首页"),
    ("state.retry", "Try again", "重试"),
    // common
    ("common.copy", "Copy", "复制"),
    ("common.copied", "Copied", "已复制"),
    ("common.prev", "Previous", "上一页"),
    ("common.next", "Next", "下一页"),
    ("common.page", "Page", "第"),
    ("common.page_of", "of", "页，共"),
    ("common.sort_asc", "ascending", "升序"),
    ("common.sort_desc", "descending", "降序"),
    ("common.yes", "yes", "是"),
    ("common.no", "no", "否"),
    ("common.save", "Save", "保存"),
    ("common.submit", "Submit", "提交"),
    ("common.cancel", "Cancel", "取消"),
    ("common.none", "none", "无"),
    ("common.search", "Search", "搜索"),
    ("common.qr", "QR code", "二维码"),
    ("common.live", "Live", "实时"),
    ("common.done", "Done.", "已完成。"),
    // status badges
    ("status.ok", "ok", "成功"),
    ("status.failed", "failed", "失败"),
    ("status.active", "active", "有效"),
    ("status.rotated", "rotated", "已轮换"),
    ("status.revoked", "revoked", "已吊销"),
    ("status.open", "open", "投票中"),
    ("status.approved", "approved", "已通过"),
    ("status.rejected", "rejected", "已否决"),
    ("status.expired", "expired", "已过期"),
    ("status.pending", "pending", "待上链"),
    ("status.committed", "committed", "已上链"),
    // home
    ("home.title", "Trellis", "Trellis"),
    (
        "home.lead",
        "One shared permissioned chain for traceability, e-invoicing and procurement.",
        "一条共享的联盟链，承载溯源、电子发票与招投标。",
    ),
    ("home.chain", "Chain", "链"),
    ("home.height", "Height", "区块高度"),
    ("home.validators", "Validators", "验证节点"),
    ("home.suite", "Crypto suite", "密码套件"),
    // explorer
    ("explorer.title", "Chain explorer", "区块浏览器"),
    ("explorer.latest_blocks", "Latest blocks", "最新区块"),
    ("explorer.latest_txs", "Latest transactions", "最新交易"),
    ("explorer.blocks", "Blocks", "区块"),
    ("explorer.block", "Block", "区块"),
    ("explorer.tx", "Transaction", "交易"),
    ("explorer.txs", "Transactions", "交易"),
    ("explorer.account", "Account", "账户"),
    ("explorer.state", "State", "状态"),
    ("explorer.height", "Height", "高度"),
    ("explorer.hash", "Hash", "哈希"),
    ("explorer.prev_hash", "Previous block", "上一区块"),
    ("explorer.time", "Time", "时间"),
    ("explorer.tx_count", "Transactions", "交易数"),
    ("explorer.proposer", "Proposer", "出块节点"),
    ("explorer.tx_root", "Transaction root", "交易根"),
    ("explorer.receipt_root", "Receipt root", "回执根"),
    ("explorer.state_root", "State root", "状态根"),
    ("explorer.validator_set", "Validator set", "验证节点集合"),
    ("explorer.signatures", "Commit signatures", "提交签名"),
    ("explorer.round", "Round", "轮次"),
    ("explorer.sender", "Sender", "发送方"),
    ("explorer.nonce", "Nonce", "序号"),
    ("explorer.contract", "Contract", "合约"),
    ("explorer.method", "Method", "方法"),
    ("explorer.args", "Arguments", "参数"),
    ("explorer.expiry", "Expires", "过期时间"),
    ("explorer.receipt", "Receipt", "回执"),
    ("explorer.result", "Result", "结果"),
    ("explorer.code", "Error code", "错误码"),
    ("explorer.message", "Message", "信息"),
    ("explorer.events", "Events", "事件"),
    ("explorer.event", "Event", "事件"),
    ("explorer.index", "Index", "序号"),
    ("explorer.key", "Key", "键"),
    ("explorer.value", "Value", "值"),
    ("explorer.absent", "absent (no value)", "不存在（无值）"),
    ("explorer.at_height", "at height", "于高度"),
    ("explorer.did", "DID", "DID"),
    ("explorer.member", "Member", "成员"),
    ("explorer.organisation", "Organisation", "组织"),
    ("explorer.roles", "Roles", "角色"),
    ("explorer.key_status", "Key status", "密钥状态"),
    ("explorer.pending", "Pending transactions", "待上链交易"),
    ("explorer.recent_txs", "Recent transactions", "近期交易"),
    (
        "explorer.search_hint",
        "Block height, block or transaction hash, or account key",
        "区块高度、区块或交易哈希、账户公钥",
    ),
    (
        "explorer.search_none",
        "Nothing matches this search.",
        "没有匹配的结果。",
    ),
    ("explorer.state_lookup", "Look up a state key", "查询状态键"),
    (
        "explorer.chart_txs",
        "Transactions per block",
        "每个区块的交易数",
    ),
    (
        "explorer.chart_interval",
        "Seconds between blocks",
        "出块间隔（秒）",
    ),
    ("explorer.lifecycle", "Lifecycle", "生命周期"),
    ("explorer.signed", "Signed by the sender", "发送方签名"),
    ("explorer.included", "Included in block", "打包进区块"),
    (
        "explorer.finalised",
        "Finalised by validator signatures",
        "验证节点签名确认",
    ),
    (
        "explorer.proof_link",
        "Proof bundle (JSON)",
        "证明包（JSON）",
    ),
    (
        "explorer.live_hint",
        "New blocks appear here as they are committed.",
        "新区块上链后会自动出现在这里。",
    ),
    // in-browser verification
    (
        "verify.button",
        "Verify in this browser",
        "在本浏览器中验证",
    ),
    (
        "verify.ok",
        "Verified in this browser: the proof is valid.",
        "已在本浏览器中验证：证明有效。",
    ),
    (
        "verify.fail",
        "Verification failed: the proof is not valid.",
        "验证失败：证明无效。",
    ),
    (
        "verify.unavailable",
        "This browser cannot verify here (it needs HTTPS and WebCrypto Ed25519).",
        "此浏览器无法在此验证（需要 HTTPS 与 WebCrypto Ed25519）。",
    ),
    (
        "verify.explain",
        "Your browser checks the validators' signatures and the Merkle proofs itself, with WebCrypto; it does not trust this server's word.",
        "由您的浏览器使用 WebCrypto 自行核验验证节点签名与默克尔证明，无需信任本服务器。",
    ),
    (
        "verify.sm2",
        "This chain uses SM2/SM3, which browsers' WebCrypto does not offer; verify with `trellis verify` instead.",
        "本链使用 SM2/SM3，浏览器 WebCrypto 不支持；请使用 `trellis verify` 验证。",
    ),
    // administration
    ("admin.title", "Administration", "管理"),
    ("admin.organisations", "Organisations", "组织"),
    ("admin.members", "Members", "成员"),
    ("admin.keys", "Keys", "密钥"),
    ("admin.devices", "Devices", "设备"),
    ("admin.governance", "Governance", "治理"),
    ("admin.org_id", "Identifier", "标识"),
    ("admin.name", "Name", "名称"),
    ("admin.status", "Status", "状态"),
    ("admin.admitted", "Admitted at height", "加入高度"),
    ("admin.member_name", "Member name", "成员名"),
    ("admin.roles", "Roles", "角色"),
    (
        "admin.roles_hint",
        "Comma-separated, e.g. operator, auditor",
        "以逗号分隔，如 operator, auditor",
    ),
    ("admin.web_user", "Web sign-in", "网页登录"),
    ("admin.new_password", "Initial password", "初始密码"),
    (
        "admin.password_hint",
        "At least 10 characters.",
        "至少 10 个字符。",
    ),
    ("admin.add_member", "Add member", "添加成员"),
    (
        "admin.member_added",
        "Member registered on chain.",
        "成员已在链上登记。",
    ),
    ("admin.set_roles", "Change roles", "修改角色"),
    (
        "admin.roles_changed",
        "Roles changed on chain.",
        "角色已在链上修改。",
    ),
    ("admin.public_key", "Public key", "公钥"),
    ("admin.since", "Since height", "自高度"),
    ("admin.rotate", "Rotate", "轮换"),
    ("admin.revoke", "Revoke", "吊销"),
    ("admin.reason", "Reason", "原因"),
    (
        "admin.key_rotated",
        "Key rotated: the member now signs with a new key.",
        "密钥已轮换：该成员改用新密钥签名。",
    ),
    ("admin.key_revoked", "Key revoked.", "密钥已吊销。"),
    (
        "admin.custodial",
        "Held in this node's keystore",
        "由本节点密钥库托管",
    ),
    ("admin.device_id", "Device", "设备"),
    ("admin.device_accepted", "Messages accepted", "已接收消息"),
    ("admin.device_refused", "Refused", "已拒绝"),
    (
        "admin.gateway_elsewhere",
        "No IoT gateway runs in this node: message counts are on the gateway's own /metrics.",
        "本节点未运行物联网网关：消息计数见网关自身的 /metrics。",
    ),
    (
        "admin.unregistered_refused",
        "Messages refused from unregistered devices",
        "来自未登记设备而被拒绝的消息",
    ),
    ("iot.reject.oversized", "too large", "过大"),
    ("iot.reject.malformed", "malformed", "格式错误"),
    ("iot.reject.unknown_device", "unknown device", "未知设备"),
    ("iot.reject.revoked_device", "revoked device", "设备已吊销"),
    ("iot.reject.wrong_topic", "wrong topic", "主题不符"),
    ("iot.reject.wrong_kind", "wrong kind", "设备类型不符"),
    ("iot.reject.bad_signature", "bad signature", "签名无效"),
    ("iot.reject.replay", "replay", "重放"),
    ("iot.reject.clock_skew", "clock off", "时钟偏差"),
    ("admin.device_kind", "Kind", "类型"),
    ("admin.device_binding", "Bound to", "绑定对象"),
    (
        "admin.devices_later",
        "Devices registered on chain: the IoT gateway accepts signed messages only from active devices.",
        "链上登记的设备：物联网网关只接收在用设备签名的消息。",
    ),
    ("admin.proposal", "Proposal", "提案"),
    ("admin.action", "Action", "动作"),
    ("admin.description", "Description", "说明"),
    ("admin.proposer", "Proposer", "提出者"),
    ("admin.deadline", "Voting ends", "投票截止"),
    ("admin.approvals", "Approvals", "赞成"),
    ("admin.rejections", "Rejections", "反对"),
    ("admin.approve", "Approve", "赞成"),
    ("admin.reject", "Reject", "反对"),
    ("admin.vote_cast", "Vote recorded on chain.", "投票已上链。"),
    (
        "admin.propose_admission",
        "Propose admitting an organisation",
        "提议接纳新组织",
    ),
    (
        "admin.admin_name",
        "Its first administrator",
        "其首位管理员",
    ),
    (
        "admin.admin_key",
        "Administrator's public key",
        "管理员公钥",
    ),
    (
        "admin.proposed",
        "Proposal submitted on chain.",
        "提案已上链。",
    ),
    (
        "admin.chain_error",
        "The chain refused this",
        "链上拒绝了此操作",
    ),
    (
        "admin.only_admins",
        "Only organisation administrators can change this.",
        "仅组织管理员可以修改。",
    ),
    // form validation
    (
        "form.invalid_name",
        "Use 1–64 letters, digits, '-', '_' or '.'.",
        "请使用 1–64 个字母、数字、“-”“_”或“.”。",
    ),
    (
        "form.invalid_roles",
        "Each role: 1–32 lower-case letters, digits or '_'.",
        "每个角色：1–32 个小写字母、数字或“_”。",
    ),
    (
        "form.password_short",
        "At least 10 characters.",
        "至少 10 个字符。",
    ),
    (
        "form.username_taken",
        "This username is taken.",
        "该用户名已被占用。",
    ),
    (
        "form.invalid_key",
        "Not a valid public key for this chain.",
        "不是本链可用的公钥。",
    ),
    ("form.too_long", "Too long.", "太长。"),
    // devices
    ("admin.register_device", "Register a device", "登记设备"),
    ("admin.device_key", "Device public key", "设备公钥"),
    (
        "admin.device_key_hint",
        "As the device shows it: ed25519:<64 hex> (sm2:<130 hex> on a 国密 chain).",
        "按设备显示的格式：ed25519:<64 位十六进制>（国密链为 sm2:<130 位十六进制>）。",
    ),
    ("admin.device_sensor", "Sensor (readings)", "传感器（读数）"),
    (
        "admin.device_scanner",
        "Scanner (scans)",
        "扫码设备（扫码）",
    ),
    ("admin.binding_none", "Nothing", "无"),
    ("admin.binding_lot", "A lot", "批次"),
    ("admin.binding_shipment", "A shipment", "运单"),
    ("admin.binding_location", "A location", "地点"),
    ("admin.binding_value", "Bound to (value)", "绑定值"),
    (
        "admin.binding_hint",
        "Lot: GTIN-14/lot, e.g. 09521234000020/CHZ-2611A; shipment: its reference; location: a 13-digit GLN.",
        "批次：GTIN-14/批号，如 09521234000020/CHZ-2611A；运单：编号；地点：13 位 GLN。",
    ),
    (
        "admin.binding_invalid",
        "This does not name what the binding needs.",
        "绑定值不符合所选类型。",
    ),
    (
        "admin.device_registered",
        "The device is registered on chain.",
        "设备已在链上登记。",
    ),
    (
        "admin.device_revoked",
        "The device is revoked: the gateway refuses its messages from now on.",
        "设备已吊销：网关将拒收其消息。",
    ),
    // traceability
    (
        "trace.anchor_certificate",
        "Anchor a certificate",
        "证书上链",
    ),
    (
        "trace.certificate_explain",
        "Choose the document: this browser computes its SHA-256 and only the digest goes on chain. Anyone holding the document can later check it against the chain.",
        "选择文件：浏览器计算其 SHA-256，只有摘要上链。持有该文件的任何人之后都可以与链上记录核对。",
    ),
    ("trace.document", "Document", "文件"),
    (
        "trace.document_hash",
        "SHA-256 of the document",
        "文件的 SHA-256",
    ),
    ("trace.certificate_kind", "Kind", "类型"),
    ("trace.issuer", "Issuer", "签发机构"),
    ("trace.subject", "Applies to", "适用范围"),
    (
        "trace.whole_product",
        "Applies to the whole product (every lot)",
        "适用于整个产品（所有批次）",
    ),
    (
        "trace.certificate_anchored",
        "The certificate's digest is on chain.",
        "证书摘要已上链。",
    ),
    (
        "trace.certificate_failed",
        "The certificate was refused",
        "证书上链被拒绝",
    ),
    (
        "trace.err.hash",
        "64 hexadecimal characters (a SHA-256 digest).",
        "应为 64 个十六进制字符（SHA-256 摘要）。",
    ),
    (
        "trace.err.humidity",
        "Give both limits between 0 and 100, the lowest first.",
        "请填写 0 到 100 之间的上下限，下限在前。",
    ),
    (
        "trace.humidity_min",
        "Lowest allowed humidity (%RH)",
        "最低允许湿度（%RH）",
    ),
    (
        "trace.humidity_max",
        "Highest allowed humidity (%RH)",
        "最高允许湿度（%RH）",
    ),
    ("trace.handovers", "Handovers", "交接"),
    (
        "trace.handovers_explain",
        "Custody moves only when the receiving organisation accepts: both sides sign on chain.",
        "只有接收方确认后保管权才转移：双方都在链上签名。",
    ),
    ("trace.hand_over", "Hand over", "移交"),
    (
        "trace.hand_over_explain",
        "Offer this lot to another organisation; it stays yours until they accept.",
        "将此批次移交给其他组织；对方确认前仍由您保管。",
    ),
    ("trace.to_org", "To", "接收方"),
    ("trace.from_org", "From", "移交方"),
    ("trace.handover_id", "Handover", "交接单"),
    ("trace.accept", "Accept", "接收"),
    ("trace.reject", "Reject", "拒收"),
    ("trace.cancel", "Cancel", "撤回"),
    ("trace.handover.offered", "Awaiting acceptance", "待接收"),
    ("trace.handover.accepted", "Accepted", "已接收"),
    ("trace.handover.rejected", "Rejected", "已拒收"),
    ("trace.handover.cancelled", "Cancelled", "已撤回"),
    (
        "trace.handover_offered",
        "The handover is offered; custody moves when the receiver accepts.",
        "已发起移交；接收方确认后保管权转移。",
    ),
    (
        "trace.handover_accepted",
        "Accepted: your organisation now holds the lots.",
        "已接收：批次现由本组织保管。",
    ),
    (
        "trace.handover_rejected",
        "The handover is rejected.",
        "已拒收。",
    ),
    (
        "trace.handover_cancelled",
        "The handover is cancelled.",
        "已撤回移交。",
    ),
    (
        "trace.handover_failed",
        "The handover was refused",
        "移交被拒绝",
    ),
    ("form.required", "This field is required.", "此项必填。"),
    ("trace.overview", "Overview", "概览"),
    ("trace.products", "Products", "产品"),
    ("trace.lots", "Lots", "批次"),
    ("trace.events", "Events", "事件"),
    ("trace.locations", "Locations", "地点"),
    ("trace.alerts", "Alerts", "告警"),
    ("trace.latest_alerts", "Latest alerts", "最新告警"),
    (
        "trace.alerts_explain",
        "Cold-chain excursions and recalls are recorded on chain; counterfeit suspicions come from consumer scans. New alerts appear here as they happen.",
        "冷链超标和召回记录在链上；疑似假冒来自消费者扫码。新告警会实时出现在这里。",
    ),
    ("trace.alert.excursion", "Cold-chain excursion", "冷链超标"),
    ("trace.alert.recall", "Recall", "召回"),
    (
        "trace.alert.counterfeit",
        "Counterfeit suspicion",
        "疑似假冒",
    ),
    ("trace.alert_kind", "Alert", "告警"),
    ("trace.count", "Count", "数量"),
    ("trace.when", "When", "时间"),
    ("trace.where", "Where", "地点"),
    ("trace.action", "Action", "动作"),
    ("trace.biz_step", "Business step", "业务步骤"),
    ("trace.event_type", "Event type", "事件类型"),
    ("trace.event_id", "Event ID", "事件 ID"),
    ("trace.all_types", "All event types", "全部事件类型"),
    ("trace.add_product", "Register a product", "登记产品"),
    ("trace.add_lot", "Create a lot", "创建批次"),
    ("trace.add_location", "Register a location", "登记地点"),
    (
        "trace.product_added",
        "The product is registered on chain.",
        "产品已登记上链。",
    ),
    (
        "trace.lot_added",
        "The lot is created on chain.",
        "批次已上链创建。",
    ),
    (
        "trace.location_added",
        "The location is registered on chain.",
        "地点已登记上链。",
    ),
    (
        "trace.recalled_done",
        "The recall is on chain; linked lots are marked recalled.",
        "召回已上链，关联批次均已标记为召回。",
    ),
    ("trace.gtin", "GTIN", "商品条码 GTIN"),
    (
        "trace.gtin_hint",
        "8, 12, 13 or 14 digits; the last one is the check digit.",
        "8、12、13 或 14 位数字，最后一位是校验位。",
    ),
    ("trace.gln", "GLN", "位置码 GLN"),
    ("trace.location_gln", "Location (GLN)", "地点（GLN）"),
    ("trace.location_kind", "Kind", "类型"),
    ("trace.address", "Address", "地址"),
    ("trace.name", "Name", "名称"),
    ("trace.name_zh", "Chinese name", "中文名称"),
    ("trace.brand", "Brand", "品牌"),
    ("trace.origin", "Origin", "产地"),
    (
        "trace.origin_country",
        "Country (ISO code)",
        "国家（ISO 代码）",
    ),
    (
        "trace.temp_min",
        "Lowest allowed temperature (°C)",
        "最低允许温度（°C）",
    ),
    (
        "trace.temp_max",
        "Highest allowed temperature (°C)",
        "最高允许温度（°C）",
    ),
    ("trace.shelf_life", "Shelf life (days)", "保质期（天）"),
    ("trace.temperature", "Temperature", "温度"),
    ("trace.owner", "Owner", "所有方"),
    ("trace.custodian", "Held by", "当前持有方"),
    ("trace.product", "Product", "产品"),
    ("trace.lot", "Lot", "批次"),
    ("trace.serial", "Serial number", "序列号"),
    ("trace.status", "Status", "状态"),
    ("trace.status.ok", "OK", "正常"),
    ("trace.status.non_conformant", "Non-conformant", "不合格"),
    ("trace.status.recalled", "Recalled", "已召回"),
    ("trace.expiry", "Best before", "保质期至"),
    ("trace.produced", "Produced", "生产日期"),
    ("trace.producer", "Producer", "生产方"),
    ("trace.quantity", "Quantity", "数量"),
    ("trace.units", "Logistic units (SSCC)", "物流单元（SSCC）"),
    ("trace.excursions", "Excursions", "超标次数"),
    ("trace.excursion", "Cold-chain excursion", "冷链超标"),
    (
        "trace.out_of_range",
        "reading out of range",
        "次读数超出范围",
    ),
    ("trace.allowed_range", "Allowed:", "允许范围："),
    (
        "trace.no_readings",
        "No sensor readings for this lot.",
        "此批次暂无传感器读数。",
    ),
    ("trace.cold_chain", "Cold chain", "冷链记录"),
    ("trace.journey", "Journey", "流通历程"),
    ("trace.certificates", "Certificates", "证书"),
    (
        "trace.no_certificates",
        "No certificates anchored.",
        "暂无上链证书。",
    ),
    ("trace.valid_until", "valid until", "有效期至"),
    ("trace.verified_on_chain", "Verified on chain", "链上验证"),
    (
        "trace.verify_explain",
        "Your phone checks the lot's record against the consortium's validator signatures by itself; nothing has to be taken on trust from this page.",
        "您的手机会自行用联盟验证节点的签名核验该批次记录，无需信任本页面。",
    ),
    (
        "trace.banner.ok",
        "Genuine and in good standing",
        "正品，状态正常",
    ),
    (
        "trace.banner.ok_detail",
        "Recorded by its producer on the Trellis chain; no recall, no cold-chain problem.",
        "生产方已在 Trellis 链上登记；无召回，冷链正常。",
    ),
    (
        "trace.banner.recalled",
        "Recalled — do not consume",
        "已召回——请勿食用",
    ),
    (
        "trace.banner.recalled_detail",
        "This lot is part of a recall. Return it to the shop or contact the producer.",
        "此批次在召回范围内。请退回商店或联系生产方。",
    ),
    (
        "trace.banner.non_conformant",
        "Cold chain broken",
        "冷链中断",
    ),
    (
        "trace.banner.non_conformant_detail",
        "Sensors recorded temperatures outside the allowed range for this lot.",
        "传感器记录到此批次温度超出允许范围。",
    ),
    (
        "trace.banner.expired",
        "Past its best-before date",
        "已过保质期",
    ),
    (
        "trace.banner.expired_detail",
        "The best-before date of this lot has passed.",
        "此批次已超过保质期。",
    ),
    ("trace.banner.unknown", "Lot not found", "未找到批次"),
    (
        "trace.banner.unknown_detail",
        "The product is registered, but the chain holds no record of this lot or item.",
        "产品已登记，但链上没有此批次或单品的记录。",
    ),
    (
        "trace.counterfeit_title",
        "Possible counterfeit",
        "疑似假冒",
    ),
    (
        "trace.counterfeit_detail",
        "This serial number has been scanned by unusually many different phones. Check the pack and buy from an authorised shop.",
        "此序列号被异常多的不同手机扫描过。请检查包装，并从正规渠道购买。",
    ),
    (
        "trace.bad_link",
        "This is not a valid product link",
        "这不是有效的商品链接",
    ),
    ("trace.unknown_product", "Unknown product", "未知产品"),
    ("trace.consumer_page", "Consumer page", "消费者页面"),
    (
        "trace.print_labels",
        "Print labels (PDF)",
        "打印标签（PDF）",
    ),
    ("trace.graph", "Trace graph", "追溯图"),
    (
        "trace.graph_explain",
        "Lots this lot was made from (left) and lots made from it (right), as recorded on chain.",
        "左侧为原料批次，右侧为由其制成的批次，均以链上记录为准。",
    ),
    (
        "trace.graph_truncated",
        "The graph is larger than shown.",
        "追溯图未完整显示。",
    ),
    ("trace.recall", "Recall this lot", "召回此批次"),
    (
        "trace.recall_explain",
        "A recall is final. It marks this lot and every lot made from it as recalled, on chain.",
        "召回不可撤销。此批次及由其制成的所有批次都会在链上标记为召回。",
    ),
    ("trace.recall_reason", "Reason", "原因"),
    (
        "trace.recall_failed",
        "The recall was refused",
        "召回被拒绝",
    ),
    ("trace.step.commissioning", "Produced", "生产"),
    ("trace.step.shipping", "Shipped", "发货"),
    ("trace.step.receiving", "Received", "收货"),
    ("trace.step.transforming", "Processed", "加工"),
    ("trace.step.packing", "Packed", "装箱"),
    ("trace.step.storing", "Stored", "入库"),
    ("trace.step.retail_selling", "Sold", "售出"),
    ("trace.step.inspecting", "Inspected", "检验"),
    ("trace.step.loading", "Loaded", "装车"),
    ("trace.step.unloading", "Unloaded", "卸货"),
    ("trace.step.sensor_reporting", "Sensor report", "传感器上报"),
    (
        "trace.step.decommissioning",
        "Taken out of circulation",
        "退出流通",
    ),
    ("trace.step.event", "Recorded", "记录"),
    (
        "trace.err.check_digit",
        "The check digit is wrong.",
        "校验位错误。",
    ),
    (
        "trace.err.gtin_format",
        "Wrong number of digits, or not only digits.",
        "位数不对或含非数字字符。",
    ),
    (
        "trace.err.charset",
        "Only letters, digits and GS1-allowed punctuation, up to 20 characters.",
        "仅限字母、数字和 GS1 允许的标点，最多 20 个字符。",
    ),
    (
        "trace.err.range",
        "Give both limits, the lowest first, as numbers.",
        "请填写上下限两个数字，下限在前。",
    ),
    (
        "trace.err.number",
        "A whole number above zero.",
        "请输入大于零的整数。",
    ),
    (
        "trace.err.date",
        "A date as YYYY-MM-DD.",
        "日期格式为 YYYY-MM-DD。",
    ),
    (
        "trace.err.country",
        "Two capital letters (ISO 3166), e.g. CN.",
        "两个大写字母（ISO 3166），如 CN。",
    ),
    (
        "trace.err.gtin_taken",
        "Another organisation has registered it already.",
        "已被其他组织登记。",
    ),
    (
        "trace.err.lot_exists",
        "This lot exists already.",
        "该批次已存在。",
    ),
    (
        "trace.err.unknown_product",
        "Register this product first (your organisation must own it).",
        "请先登记该产品（须为本组织所有）。",
    ),
];

fn index() -> &'static HashMap<&'static str, (&'static str, &'static str)> {
    static INDEX: OnceLock<HashMap<&'static str, (&'static str, &'static str)>> = OnceLock::new();
    INDEX.get_or_init(|| {
        CATALOGUE
            .iter()
            .map(|(k, en, zh)| (*k, (*en, *zh)))
            .collect()
    })
}

/// The string for `key` in `lang`; the key itself when it is missing (caught by tests).
pub fn tr(lang: Lang, key: &'static str) -> &'static str {
    match index().get(key) {
        Some((en, zh)) => match lang {
            Lang::En => en,
            Lang::ZhCn => zh,
        },
        None => key,
    }
}

/// The string for `key` in the language of the page being rendered.
pub fn t(key: &'static str) -> &'static str {
    tr(current_lang(), key)
}

tokio::task_local! {
    /// The language of the request being answered, for views built outside the render
    /// context (set by the web router's middleware for the whole request).
    pub static REQUEST_LANG: Lang;
}

/// The language of the page being rendered: the render context's, else the request's.
pub fn current_lang() -> Lang {
    leptos::prelude::use_context::<Lang>()
        .or_else(|| REQUEST_LANG.try_with(|l| *l).ok())
        .unwrap_or_default()
}

pub fn keys() -> impl Iterator<Item = &'static str> {
    CATALOGUE.iter().map(|(k, _, _)| *k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_language_picks_the_highest_quality_supported_language() {
        assert_eq!(Lang::negotiate("zh-CN,zh;q=0.9,en;q=0.8"), Lang::ZhCn);
        assert_eq!(Lang::negotiate("en-GB,en;q=0.9,zh;q=0.8"), Lang::En);
        assert_eq!(Lang::negotiate("fr-FR, zh-TW;q=0.5, en;q=0.4"), Lang::ZhCn);
        assert_eq!(Lang::negotiate("de, fr;q=0.5"), Lang::En);
        assert_eq!(Lang::negotiate("zh;q=0, en;q=0.1"), Lang::En);
        assert_eq!(Lang::negotiate(""), Lang::En);
        assert_eq!(Lang::negotiate(";;;,,q=abc"), Lang::En);
    }

    #[test]
    fn catalogue_keys_are_unique_and_translated() {
        let mut seen = std::collections::HashSet::new();
        for (k, en, zh) in CATALOGUE {
            assert!(seen.insert(*k), "duplicate key {k}");
            assert!(!en.is_empty() && !zh.is_empty(), "untranslated {k}");
        }
    }

    /// Keys in `t("…")` and `tr(lang, "…")` calls.
    fn used_keys(src: &str) -> Vec<&str> {
        let mut out = Vec::new();
        for pat in ["t(\"", "tr(lang, \""] {
            for (i, _) in src.match_indices(pat) {
                let before = src[..i].chars().next_back();
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    continue; // e.g. `get("`, `sort("`
                }
                let rest = &src[i + pat.len()..];
                let Some(end) = rest.find('"') else { continue };
                let key = &rest[..end];
                // Prose in comments (`t("…")`) is not a key.
                if !key.is_empty()
                    && key.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.'
                    })
                {
                    out.push(key);
                }
            }
        }
        out
    }

    /// Every `t("…")` / `tr(lang, "…")` in the web crates names a catalogue key.
    #[test]
    fn every_key_used_in_the_sources_exists() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut missing = Vec::new();
        let mut found = 0usize;
        let mut stack = vec![root.join("frontend/src"), root.join("apps")];
        while let Some(dir) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    let src = std::fs::read_to_string(&p).unwrap_or_default();
                    for key in used_keys(&src) {
                        found += 1;
                        if !index().contains_key(key) {
                            missing.push(format!("{}: {key}", p.display()));
                        }
                    }
                }
            }
        }
        assert!(
            found > 100,
            "the scan found only {found} keys: is it reading the sources?"
        );
        assert!(
            missing.is_empty(),
            "keys missing from the catalogue: {missing:?}"
        );
    }
}
