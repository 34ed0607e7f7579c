use vantage_benches::*;
use vantage_proto::otlp::common::v1::any_value::Value;
fn main() {
    let t = query_terms();
    println!("{t:?}");
    let now = 1_750_000_000_000_000_000;
    let (mut c, mut r, mut p, mut n, mut lens) = (0, 0, 0, 0, 0usize);
    let start = std::time::Instant::now();
    let mut raw = 0;
    for b in 0..200u64 {
        let req = log_batch(1, b * 1000, 1000, 200, now);
        raw += raw_text_len(&req);
        for rec in &req.resource_logs[0].scope_logs[0].log_records {
            let Some(Value::StringValue(s)) = rec.body.as_ref().unwrap().value.as_ref() else { panic!() };
            if b == 0 && n < 12 { println!("{} {}", rec.severity_text, s); }
            n += 1; lens += s.len();
            let has = |w: &str| s.split(|c: char| !c.is_ascii_alphanumeric()).any(|x| x == w);
            c += has(t.common) as usize; r += has(t.rare) as usize; p += s.contains(t.phrase) as usize;
        }
    }
    println!("gen {:?} for {n}", start.elapsed());
    println!("common {:.2}% rare {:.3}% phrase {:.2}% avg len {} raw/rec {}", c as f64*100.0/n as f64, r as f64*100.0/n as f64, p as f64*100.0/n as f64, lens/n, raw/n);
    let req = log_batch(1, 0, 2, 200, now);
    println!("{:#?}", req.resource_logs[0].resource);
    println!("{:?}", req.resource_logs[0].scope_logs[0].log_records[0]);
    use prost::Message; println!("encoded 1000: {}", log_batch(1,0,1000,200,now).encoded_len());
}
