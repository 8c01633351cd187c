//! Many topics (`--topics N`): their names, which topic each message goes to, how the
//! consumers split the topic-partitions, and the batched admin requests that create the
//! topics and read their log ends (one request per many topics or partitions, a few in
//! flight, so that 10,000 topics cost seconds, not minutes). Runs on a glommio executor.

use std::collections::HashSet;
use std::rc::Rc;

use shardline::client::connection::Connection;
use shardline::client::{ClientError, Cluster};
use shardline::protocol::{
    CreatableTopic, CreateTopicsRequest, ErrorCode, ListOffsetsPartition, ListOffsetsRequest,
    OffsetSpec, Request, Response,
};

/// The most topics one run may drive.
pub const TOPICS_MAX: u32 = 100_000;
/// Topics per CreateTopics request.
pub const CREATE_TOPICS_PER_REQUEST: usize = 500;
/// Partitions per ListOffsets request.
pub const LIST_OFFSETS_PER_REQUEST: usize = 1_000;
/// Admin requests (create, list offsets) in flight at once.
pub const ADMIN_REQUESTS_IN_FLIGHT: usize = 4;
/// How long the broker may take over one CreateTopics request.
const CREATE_TIMEOUT_MS: u32 = 120_000;

const _: () = assert!(CREATE_TOPICS_PER_REQUEST <= shardline::constants::TOPICS_PER_REQUEST_MAX);
const _: () = assert!(LIST_OFFSETS_PER_REQUEST <= shardline::constants::PARTITIONS_PER_REQUEST_MAX);
const _: () = assert!(
    TOPICS_MAX as usize <= 1 << 24,
    "topic indexes fit the checker's key"
);

/// The run's topic names: `prefix` alone, or `prefix-0` .. `prefix-<count-1>`.
pub fn topic_names(prefix: &str, count: Option<u32>) -> Vec<String> {
    match count {
        None => vec![prefix.to_string()],
        Some(count) => (0..count)
            .map(|index| format!("{prefix}-{index}"))
            .collect(),
    }
}

/// The topic (index) of message `sequence` of producer `producer`: the producers rotate
/// over the topics message by message, each starting at its own.
pub fn topic_of(sequence: u64, producer: u32, topics: usize) -> usize {
    assert!(topics > 0, "no topics");
    ((sequence + u64::from(producer)) % topics as u64) as usize
}

/// Every (topic index, partition) of the run, topic by topic.
pub fn topic_partitions(topics: usize, partitions: u32) -> Vec<(u32, u32)> {
    (0..topics as u32)
        .flat_map(|topic| (0..partitions).map(move |partition| (topic, partition)))
        .collect()
}

/// The topic-partitions consumer `consumer` (of `consumers`) reads without a group: every
/// `consumers`-th of `topic_partitions`, so that one topic splits by partition as before
/// and many topics of one partition split by topic.
pub fn consumer_share(all: &[(u32, u32)], consumers: u32, consumer: u32) -> Vec<(u32, u32)> {
    assert!(consumer < consumers, "consumer {consumer} of {consumers}");
    all.iter()
        .enumerate()
        .filter(|(index, _)| *index as u64 % u64::from(consumers) == u64::from(consumer))
        .map(|(_, pair)| *pair)
        .collect()
}

/// Runs `work` over `chunks`, at most `ADMIN_REQUESTS_IN_FLIGHT` at once, results in order.
async fn in_flight<T: 'static, R: 'static, F>(
    chunks: Vec<T>,
    work: impl Fn(T) -> F,
) -> Result<Vec<R>, String>
where
    F: std::future::Future<Output = Result<R, String>> + 'static,
{
    let mut results = Vec::new();
    let mut chunks = chunks.into_iter().peekable();
    while chunks.peek().is_some() {
        let wave: Vec<_> = chunks
            .by_ref()
            .take(ADMIN_REQUESTS_IN_FLIGHT)
            .map(|chunk| glommio::spawn_local(work(chunk)))
            .collect();
        for task in wave {
            results.push(task.await?);
        }
    }
    Ok(results)
}

async fn create_chunk(
    cluster: Rc<Cluster>,
    names: Vec<String>,
    partitions: u32,
) -> Result<(), String> {
    let request = Request::CreateTopics(CreateTopicsRequest {
        topics: names
            .iter()
            .map(|name| CreatableTopic {
                name: name.clone(),
                partitions,
                replication_factor: 1,
                configs: Vec::new(),
            })
            .collect(),
        validate_only: false,
        timeout_ms: CREATE_TIMEOUT_MS,
    });
    let first = names.first().map_or("", String::as_str);
    let failed = |e: ClientError| format!("creating {} topics from {first}: {e}", names.len());
    let connection = cluster.any_connection().await.map_err(failed)?;
    let response = connection.request(&request, &[]).await.map_err(failed)?;
    let Response::CreateTopics(created) = response.response else {
        return Err(format!("creating topics from {first}: unexpected response"));
    };
    for topic in created.topics {
        if !matches!(topic.error, ErrorCode::None | ErrorCode::TopicAlreadyExists) {
            return Err(format!(
                "creating topic {}: {} {}",
                topic.name, topic.error, topic.message
            ));
        }
    }
    Ok(())
}

/// Creates the topics of `names` that are missing, `CREATE_TOPICS_PER_REQUEST` to a request;
/// returns their partition count, which must be the same for every topic.
pub async fn ensure_topics(
    cluster: &Rc<Cluster>,
    names: &[String],
    partitions: u32,
) -> Result<u32, String> {
    let metadata = cluster
        .refresh_metadata()
        .await
        .map_err(|e| e.to_string())?;
    let existing: HashSet<&str> = metadata
        .topics
        .iter()
        .filter(|t| t.error == ErrorCode::None)
        .map(|t| t.name.as_str())
        .collect();
    let missing: Vec<String> = names
        .iter()
        .filter(|name| !existing.contains(name.as_str()))
        .cloned()
        .collect();
    let chunks: Vec<Vec<String>> = missing
        .chunks(CREATE_TOPICS_PER_REQUEST)
        .map(<[String]>::to_vec)
        .collect();
    in_flight(chunks, |chunk| {
        create_chunk(cluster.clone(), chunk, partitions)
    })
    .await?;
    let metadata = cluster
        .refresh_metadata()
        .await
        .map_err(|e| e.to_string())?;
    let wanted: HashSet<&str> = names.iter().map(String::as_str).collect();
    let mut counts = metadata
        .topics
        .iter()
        .filter(|t| t.error == ErrorCode::None && wanted.contains(t.name.as_str()))
        .map(|t| (t.name.as_str(), t.partitions.len() as u32));
    let Some((first, count)) = counts.next() else {
        return Err(format!("none of the {} topics exists", names.len()));
    };
    if let Some((other, other_count)) = counts.clone().find(|(_, c)| *c != count) {
        return Err(format!(
            "topic {first} has {count} partitions but {other} has {other_count}: use fresh topics"
        ));
    }
    let found = 1 + counts.count();
    if found != names.len() {
        return Err(format!(
            "{} of {} topics exist after creating them",
            found,
            names.len()
        ));
    }
    Ok(count)
}

/// One ListOffsets request for `partitions` on `connection`: their log ends, in order.
async fn list_log_ends(
    connection: &Connection,
    partitions: Vec<ListOffsetsPartition>,
) -> Result<Vec<u64>, String> {
    let asked = partitions.len();
    let request = Request::ListOffsets(ListOffsetsRequest { partitions });
    let response = connection
        .request(&request, &[])
        .await
        .map_err(|e| format!("list offsets: {e}"))?;
    let Response::ListOffsets(listed) = response.response else {
        return Err("list offsets: unexpected response".into());
    };
    if listed.partitions.len() != asked {
        return Err(format!(
            "list offsets answered {} of {asked} partitions",
            listed.partitions.len()
        ));
    }
    listed
        .partitions
        .into_iter()
        .map(|entry| match entry.error {
            ErrorCode::None => Ok(entry.offset),
            error => Err(format!(
                "log end of {}/{}: {error}",
                entry.topic, entry.partition
            )),
        })
        .collect()
}

/// The indexes of `addresses` grouped by address, groups in order of first appearance.
pub fn group_by_address<A: PartialEq + Copy>(addresses: &[A]) -> Vec<(A, Vec<usize>)> {
    let mut groups: Vec<(A, Vec<usize>)> = Vec::new();
    for (index, &address) in addresses.iter().enumerate() {
        match groups.iter_mut().find(|(a, _)| *a == address) {
            Some((_, indexes)) => indexes.push(index),
            None => groups.push((address, vec![index])),
        }
    }
    groups
}

/// The log ends of `partitions`, in order. In a cluster only a partition's leader answers
/// for it, so the partitions are asked of their leaders, one request per leader; one
/// broker answers for all of them.
async fn log_ends_chunk(
    cluster: Rc<Cluster>,
    partitions: Vec<ListOffsetsPartition>,
) -> Result<Vec<u64>, String> {
    let metadata = cluster.metadata().await.map_err(|e| e.to_string())?;
    if metadata.brokers.len() <= 1 {
        let connection = cluster.any_connection().await.map_err(|e| e.to_string())?;
        return list_log_ends(&connection, partitions).await;
    }
    let mut addresses = Vec::with_capacity(partitions.len());
    for entry in &partitions {
        let address = cluster
            .address_for(&entry.topic, entry.partition)
            .await
            .map_err(|e| format!("the leader of {}/{}: {e}", entry.topic, entry.partition))?;
        addresses.push(address);
    }
    let mut ends = vec![0; partitions.len()];
    for (address, indexes) in group_by_address(&addresses) {
        let connection = cluster
            .connection(address)
            .await
            .map_err(|e| format!("connecting to {address}: {e}"))?;
        let share = indexes.iter().map(|&i| partitions[i].clone()).collect();
        let listed = list_log_ends(&connection, share).await?;
        for (&index, end) in indexes.iter().zip(listed) {
            ends[index] = end;
        }
    }
    Ok(ends)
}

/// The log end (high watermark) of each of `pairs`, in order.
pub async fn log_ends(
    cluster: &Rc<Cluster>,
    topics: &[String],
    pairs: &[(u32, u32)],
) -> Result<Vec<u64>, String> {
    let chunks: Vec<Vec<ListOffsetsPartition>> = pairs
        .chunks(LIST_OFFSETS_PER_REQUEST)
        .map(|chunk| {
            chunk
                .iter()
                .map(|&(topic, partition)| ListOffsetsPartition {
                    topic: topics[topic as usize].clone(),
                    partition,
                    spec: OffsetSpec::Latest,
                })
                .collect()
        })
        .collect();
    let ends = in_flight(chunks, |chunk| log_ends_chunk(cluster.clone(), chunk)).await?;
    let ends: Vec<u64> = ends.into_iter().flatten().collect();
    if ends.len() != pairs.len() {
        return Err(format!(
            "list offsets answered {} of {} partitions",
            ends.len(),
            pairs.len()
        ));
    }
    Ok(ends)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_group_by_their_leaders_address_in_first_seen_order() {
        let groups = group_by_address(&["b", "a", "b", "c", "a", "b"]);
        assert_eq!(
            groups,
            [("b", vec![0, 2, 5]), ("a", vec![1, 4]), ("c", vec![3])]
        );
        assert!(group_by_address::<u16>(&[]).is_empty());
        assert_eq!(group_by_address(&[7, 7]), [(7, vec![0, 1])]);
    }

    #[test]
    fn topic_names_are_the_prefix_alone_or_numbered_from_zero() {
        assert_eq!(topic_names("load", None), ["load"]);
        assert_eq!(topic_names("many", Some(3)), ["many-0", "many-1", "many-2"]);
        assert_eq!(topic_names("many", Some(10_000))[9_999], "many-9999");
        assert_eq!(topic_names("one", Some(1)), ["one-0"]);
    }

    #[test]
    fn producers_rotate_over_every_topic_from_their_own_start() {
        let first: Vec<usize> = (0..4).map(|s| topic_of(s, 0, 3)).collect();
        assert_eq!(first, [0, 1, 2, 0]);
        let second: Vec<usize> = (0..4).map(|s| topic_of(s, 1, 3)).collect();
        assert_eq!(second, [1, 2, 0, 1]);
        assert!((0..10).all(|s| topic_of(s, 7, 1) == 0));
    }

    #[test]
    fn consumers_split_topic_partitions_and_miss_none() {
        // One topic: the split by partition of before (p % consumers).
        let one = topic_partitions(1, 8);
        assert_eq!(consumer_share(&one, 3, 1), [(0, 1), (0, 4), (0, 7)]);
        // Many topics of one partition: split by topic.
        let many = topic_partitions(20, 1);
        let shares: Vec<Vec<(u32, u32)>> = (0..4).map(|c| consumer_share(&many, 4, c)).collect();
        assert!(shares.iter().all(|share| share.len() == 5));
        let mut all: Vec<(u32, u32)> = shares.concat();
        all.sort();
        assert_eq!(all, many);
        assert_eq!(topic_partitions(2, 2), [(0, 0), (0, 1), (1, 0), (1, 1)]);
    }
}
